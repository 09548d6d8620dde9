"""Who may see what: callers' identities from the hub, datasets and their grants, the append-only audit log.

Shared hub infrastructure used by every capability (the gateway, pipelines, review, tracking).
May import: ``medimg_hub.db``, ``medimg_hub.settings``, ``medimg_kernel``; never a capability package.
"""
