"""Federated training, hub side: the Flower deployment (SuperLink, Fleet gateway, SuperNodes),
its PKI, and the platform's federation built from ``[federation]`` settings.

The Flower app itself is the package ``medimg_federated`` in ``federated/`` (simulation mode included);
the hub never imports it: ``flwr run`` ships it as a FAB, site workers get ``federated/`` on ``PYTHONPATH``.
The sites' work is :mod:`medimg_kernel.federation`.
May import: ``medimg_hub.servers``, ``medimg_hub.settings``, ``medimg_hub.tracking``, ``medimg_hub.pacs``,
``medimg_kernel``.
"""
