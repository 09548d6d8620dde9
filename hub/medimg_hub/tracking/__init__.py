"""MLflow, hub side: the tracking server and model registry, and the proxy that puts it behind the hub's login.

May import: ``medimg_hub.servers``, ``medimg_hub.settings``, ``medimg_hub.secrets``, ``medimg_hub.access``,
``medimg_hub.hubconf.roles``.
"""
