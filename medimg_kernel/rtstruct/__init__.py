"""RT Structure Sets in and out: ROI contours ↔ boolean masks on the referenced image series.

What radiotherapy planning systems (and 3D Slicer's SlicerRT, plastimatch, rt-utils) exchange.
:func:`read_rtstruct` rasterises each ROI's closed planar contours onto a
:class:`~medimg_kernel.volume.Volume` read from the series the structure set references;
:func:`write_rtstruct` traces masks on that volume into contours and returns an RT Structure Set
Storage object referencing the series.

Conventions
-----------
* Masks are boolean ``(n_rois, z, y, x)`` on the volume's grid; contour points are LPS mm
  (ContourData), one closed polygon per boundary on a slice, the last point joining the first.
* **A voxel is inside an ROI** when its centre lies inside the ROI's contours on its slice by the
  **even-odd rule** (a contour inside another is a hole, one inside the hole an island again:
  CLOSED_PLANAR and CLOSED_PLANAR_XOR alike), or on a contour line (within
  :data:`.contours.ON_EDGE_ATOL` voxels): see :mod:`.contours`.
  Keyhole contours (an outline joined to its hole by a cut of zero width) read the same way,
  except that voxel centres exactly on the cut are inside.
* **Contours are written along voxel borders** (outer boundaries and holes as separate contours,
  corners where voxels touch only diagonally cut by a quarter voxel), so write → read gives the
  masks back voxel for voxel.
* **A contour lies on a slice** when all its points are within
  ``max(POSITION_ATOL_MM, SPACING_RTOL * dz)`` mm of that slice's plane along the normal (the
  tolerances :mod:`medimg_kernel.series.geometry` accepts for the slices themselves); one off the
  slices, not planar or beyond the first or last slice is refused, naming the ROI and where it is.
* The structure set must be on the volume's Frame of Reference, reference the volume's series
  (where it names one), and its contours' ContourImageSequence, where given, the slice each
  contour lies on. Every mismatch is refused with :class:`~medimg_kernel.errors.RTStructError`.
* ROIs with no closed contour (POINT markers such as isocentres, OPEN_PLANAR lines, ROIs without
  contours) have no volume: :func:`read_rtstruct` lists them in :attr:`StructureSet.skipped`, and
  refuses them when asked for by name.
* Segment names, colours (ROIDisplayColor) and codes come from
  :class:`~medimg_kernel.anatomy.SegmentType`: the ROI name is the type's name, RT ROI
  Identification Code Sequence its property type (with its modifier), Segmented Property
  Category Code Sequence its category; RT ROI Interpreted Type is ``ORGAN`` for anatomical
  structures and empty for findings unless given.

Library choice (our own, no new dependency): rt-utils 1.2.7 (the maintained candidate, last released
2023; it pulls OpenCV, ~60 MB, into every kernel) traces contours through voxel *centres* with
``cv.findContours`` and reads them back by XOR-ing ``cv.fillPoly`` fills, so the voxels bordering a hole
are lost on the way back (or its pin-hole option cuts a channel through the mask); it pairs contours
with slices by ContourImageSequence alone, without checking where they lie, scales the row direction by
PixelSpacing[0] (the spacing *between rows*: wrong for non-square pixels), and loads the series from a
folder rather than a Volume in memory. The geometry here is ~150 lines of numpy (:mod:`.contours`),
exact by construction; highdicom's ``SOPClass`` provides the SOP Common, series, equipment, patient and
study attributes, as for the SEGs.

The room: :mod:`.content` (what a structure set holds, and the referenced series' slices),
:mod:`.read` (:func:`read_rtstruct`), :mod:`.write` (:func:`write_rtstruct`), :mod:`.contours`
(polygons ↔ voxel masks on one slice). It imports :mod:`medimg_kernel.anatomy`,
:mod:`medimg_kernel.volume`, the series geometry's tolerances, highdicom and pydicom.
"""

from __future__ import annotations

from .content import RT_STRUCTURE_SET_STORAGE, StructureSet, StructureSetROI
from .read import read_rtstruct
from .write import write_rtstruct

__all__ = ["RT_STRUCTURE_SET_STORAGE", "StructureSet", "StructureSetROI", "read_rtstruct", "write_rtstruct"]
