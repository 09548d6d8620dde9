"""The DICOMweb gateway: dataset access control and audit in front of the PACS.

:mod:`.handlers` (QIDO/WADO/STOW rules), :mod:`.paths` (what a request names), :mod:`.upstream`
(Orthanc with the hub-side credentials), :mod:`.relay` (the zero-copy WADO-RS body), :mod:`.stow`
(reading STOW-RS bodies). May import: ``medimg_hub.platform_api.base``, ``medimg_hub.access``, ``medimg_kernel``.
"""
