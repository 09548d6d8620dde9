"""Process machinery: starting, finding and stopping the platform's servers, and their logs.

:mod:`.process` (one managed process), :mod:`.runner` (what long-running Python services share),
:mod:`.jupyterhub` (the hub as a platform service), :mod:`.logs` (log lines without DICOM UIDs).
The services in start order are :mod:`medimg_hub.stack`. May import: ``medimg_hub.settings``,
``medimg_hub.secrets``, ``medimg_hub.hubconf``.
"""
