"""The clinician's review: the slice viewer widget and the label editing model.

Also the review application (worklist, case, statistics views) built on them. Modules here
may import the rest of medimg_kernel (series, seg, sr, clients, platform_client), which never
imports this package; never :mod:`medimg_hub`.
"""

from medimg_kernel.review.editing import LabelEditor
from medimg_kernel.review.viewer import SliceViewer

__all__ = ["LabelEditor", "SliceViewer"]
