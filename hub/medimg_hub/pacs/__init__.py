"""The PACS (hub side): the embedded Orthanc, loading files into it, de-identified export.

May import: ``medimg_hub.servers``, ``medimg_hub.settings``, ``medimg_hub.secrets``, ``medimg_hub.access``,
``medimg_kernel``.
"""
