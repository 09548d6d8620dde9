"""Datasets administered, not configured: the changes (:mod:`.administration`), saved query rules
applied to arriving studies (:mod:`.rules`), the platform API routes (:mod:`.api`) and the admins'
page behind the hub's login (:mod:`.page`)."""
