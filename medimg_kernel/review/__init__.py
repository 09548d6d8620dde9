"""The clinician's review: the slice viewer widget and the label editing model."""

from medimg_kernel.review.editing import LabelEditor
from medimg_kernel.review.viewer import SliceViewer

__all__ = ["LabelEditor", "SliceViewer"]
