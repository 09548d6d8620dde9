"""The platform's Flower app (Flower 1.41, Message API): ``federated/pyproject.toml`` names its
components (``medimg_federated.server_app:app``, ``medimg_federated.client_app:app``).

Imports only Flower, numpy and :mod:`medimg_kernel` (never ``medimg_hub``); only :mod:`.task`
imports torch. ``federated/`` is the source root: Flower finds the package in the app's FAB
(``flwr run federated ...``); site workers, notebooks and tests get ``federated/`` on ``PYTHONPATH``.
"""
