"""The Volume: a 3-D image on a regular grid placed in patient space.

Conventions (used everywhere in medimg_kernel):

* ``array`` is indexed ``[z, y, x]``: ``z`` is the slice index in order of
  increasing position along the slice normal, ``y`` the row, ``x`` the column.
* ``spacing`` is in millimetres along the array axes, ``(dz, dy, dx)``:
  ``dy`` is DICOM PixelSpacing[0] (between rows), ``dx`` PixelSpacing[1].
* ``origin`` is the LPS position in millimetres of the centre of voxel
  ``[0, 0, 0]`` (DICOM ImagePositionPatient of the first slice).
* ``direction`` is a 3×3 matrix whose *row* ``a`` is the LPS unit vector along
  array axis ``a``: row 0 the slice normal (direction of increasing ``z``),
  row 1 the DICOM column direction cosine (ImageOrientationPatient[3:6]),
  row 2 the DICOM row direction cosine (ImageOrientationPatient[0:3]).

So the LPS position of voxel ``(k, j, i)`` is
``origin + k*dz*direction[0] + j*dy*direction[1] + i*dx*direction[2]``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
from pydicom.dataset import Dataset

from .errors import ConfigurationError


#: Direction of an axial series in LPS: z along +S (the slice normal, row × column cosine),
#: y along +P (rows go to the back), x along +L (columns go to the patient's left).
AXIAL_DIRECTION = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True, eq=False)
class Volume:
    """Voxels of one series with their geometry in patient (LPS) space.

    Parameters
    ----------
    array
        Voxel values indexed ``[z, y, x]``, with the modality rescale applied
        (Hounsfield units for CT).
    spacing
        Voxel size in mm along ``(z, y, x)``.
    origin
        LPS position (mm) of the centre of voxel ``[0, 0, 0]``.
    direction
        3×3 matrix; row ``a`` is the LPS unit vector of array axis ``a``. Defaults to
        :data:`AXIAL_DIRECTION`. DICOM requires row 0 = row 2 × row 1 (the slice normal is
        the cross product of the row and column direction cosines); series read from DICOM
        always satisfy it.
    sources
        The source instances' headers (no pixel data), one per slice, in
        ``z`` order. Empty for volumes not read from DICOM.
    study_instance_uid, series_instance_uid, frame_of_reference_uid, modality
        Identifiers copied from the sources (empty strings when unknown).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: AXIAL_DIRECTION.copy())
    sources: tuple[Dataset, ...] = ()
    study_instance_uid: str = ""
    series_instance_uid: str = ""
    frame_of_reference_uid: str = ""
    modality: str = ""

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ConfigurationError(f"Volume.array must be 3-D (z, y, x); got shape {self.array.shape}")
        if len(self.spacing) != 3 or min(self.spacing) <= 0:
            raise ConfigurationError(f"Volume.spacing must be three positive mm values; got {self.spacing}")
        direction = np.asarray(self.direction, dtype=float)
        if direction.shape != (3, 3) or not np.allclose(direction @ direction.T, np.eye(3), atol=1e-4):
            raise ConfigurationError("Volume.direction must be a 3×3 orthonormal matrix (rows = axis unit vectors)")
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        if self.sources and len(self.sources) != self.array.shape[0]:
            raise ConfigurationError(
                f"Volume has {self.array.shape[0]} slices but {len(self.sources)} source instances"
            )

    @property
    def shape(self) -> tuple[int, int, int]:
        """Array shape ``(z, y, x)``."""
        return tuple(self.array.shape)  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """4×4 matrix mapping homogeneous indices ``(k, j, i, 1)`` to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = (self.direction * np.asarray(self.spacing)[:, None]).T
        affine[:3, 3] = self.origin
        return affine

    def index_to_lps(self, index: Sequence[float] | np.ndarray) -> np.ndarray:
        """LPS position(s) in mm of voxel index(es) ``(k, j, i)``; accepts shape (3,) or (N, 3)."""
        idx = np.asarray(index, dtype=float)
        return idx @ self.affine[:3, :3].T + self.affine[:3, 3]

    def lps_to_index(self, point: Sequence[float] | np.ndarray) -> np.ndarray:
        """Continuous voxel index(es) ``(k, j, i)`` of LPS point(s) in mm."""
        pts = np.asarray(point, dtype=float) - self.affine[:3, 3]
        return pts @ np.linalg.inv(self.affine[:3, :3]).T

    def with_array(self, array: np.ndarray) -> Volume:
        """The same geometry and sources with other voxel values (e.g. a label map)."""
        if array.shape != self.array.shape:
            raise ConfigurationError(f"array shape {array.shape} differs from the volume's {self.array.shape}")
        return replace(self, array=array)

    def same_grid(self, other: Volume, *, atol_mm: float = 1e-3) -> bool:
        """Whether ``other`` has the same shape and voxel positions (within ``atol_mm``)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm))
