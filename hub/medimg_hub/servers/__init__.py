"""Process machinery: starting, finding and stopping the platform's servers, in start order.

:mod:`.process` (one managed process), :mod:`.runner` (what long-running Python services share),
:mod:`.order` (the services in start order), :mod:`.jupyterhub` (the hub as a platform service).
May import: ``medimg_hub.settings``, ``medimg_hub.secrets``; :mod:`.order` imports the capabilities' servers.
"""
