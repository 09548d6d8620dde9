"""The platform API (hub side): one JupyterHub-managed service at ``/services/platform/``.

What JupyterHub's ``apihandlers/`` is to the hub: the application assembly (:mod:`.app`), the base
handler every route shares (:mod:`.base`), metrics (:mod:`.metrics`) and the DICOMweb gateway
(:mod:`.gateway`). The other routes live with their capability and are collected by :mod:`.app`
from each one's ``default_handlers``: :mod:`medimg_hub.pipeline.api`, :mod:`medimg_hub.review.api`,
:mod:`medimg_hub.platform_api.admin`. Run it with ``python -m medimg_hub.platform_api --config FILE``.
May import: ``medimg_hub.access``, ``medimg_hub.pipeline``, ``medimg_hub.review``, ``medimg_hub.pacs``,
``medimg_hub.db``, ``medimg_hub.settings``, ``medimg_kernel``.
"""
