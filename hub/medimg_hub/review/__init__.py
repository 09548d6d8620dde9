"""Clinician review, hub side: the review API and its rules, claims and drafts, the Voila-only server.

The kernel half (worklist, viewer, decisions) is :mod:`medimg_kernel.review`.
May import: ``medimg_hub.access``, ``medimg_hub.pipeline``, ``medimg_hub.platform_api.base``, ``medimg_hub.db``,
``medimg_hub.settings``, ``medimg_kernel``.
"""
