"""The Voila-only single-user server of clinicians and directors, and its offline template.

It runs as the user's OS account, on the untrusted side of the trust boundary like the kernels it
starts: it serves one dashboard from ``dashboards/`` with JupyterHub's identity provider and no
JupyterLab, terminals, contents API or arbitrary kernels (:mod:`.app`); :mod:`.templates` is the
``medimg`` Voila template without external requests. May import: Voila, jupyter_server and
JupyterHub's single-user extension; never ``medimg_hub``.
"""
