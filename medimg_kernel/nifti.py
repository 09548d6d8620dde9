"""NIfTI in and out (nibabel): what nnU-Net, MONAI and TotalSegmentator read and write.

Conventions
-----------
A :class:`~medimg_kernel.volume.Volume` is indexed ``[z, y, x]`` with LPS geometry (mm). A NIfTI
image is indexed ``[i, j, k]`` with an affine to RAS mm. Here NIfTI axis ``i`` is the volume's
``x`` (the DICOM row direction), ``j`` its ``y`` and ``k`` its ``z`` (the slice normal), as ITK and
nnU-Net store DICOM-derived images, and RAS = diag(-1, -1, 1) · LPS. The affine is the image's
sform when it has one (code > 0), else its qform: nibabel's ``get_best_affine``.

Only geometry that a Volume holds is accepted: three orthogonal axes (a rotation times positive
spacings, the axes' handedness free). A shear affine, a 4-D image or a non-finite affine is refused
with :class:`NiftiError` naming the file; nothing is guessed or resampled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import MedImgError
from .volume import Volume

#: LPS ↔ RAS (the same matrix both ways).
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])
#: Largest |cos| between two axes (and relative spacing difference) taken as orthogonal (equal).
ORTHOGONALITY_TOLERANCE = 1e-4
#: Largest distance (mm) between two grids' voxel centres taken as the same grid.
GRID_TOLERANCE_MM = 1e-3


class NiftiError(MedImgError, ValueError):
    """A NIfTI file that cannot become (or be written from) a Volume; the message names it and why."""


def volume_to_nifti_affine(volume: Volume) -> np.ndarray:
    """The 4×4 affine from NIfTI indices ``(i, j, k) = (x, y, z)`` of ``volume`` to RAS mm."""
    affine = volume.affine  # (k, j, i, 1) → LPS
    permuted = np.eye(4)
    permuted[:3, :3] = affine[:3, :3][:, ::-1]  # columns in (i, j, k) = (x, y, z) order
    permuted[:3, 3] = affine[:3, 3]
    flip = np.eye(4)
    flip[:3, :3] = LPS_TO_RAS
    return flip @ permuted


def write_nifti(volume: Volume, path: str | Path, *, dtype: np.dtype | type | None = None) -> Path:
    """Write ``volume`` as NIfTI-1 (``.nii`` or ``.nii.gz``); sform and qform both set (code 1, scanner).

    ``dtype``: the stored data type (default the array's; e.g. ``np.uint8`` for a label map).
    """
    import nibabel as nib

    target = Path(path)
    if not target.name.endswith((".nii", ".nii.gz")):
        raise NiftiError(f"{target}: a NIfTI file name ends in .nii or .nii.gz")
    data = np.asarray(volume.array).transpose(2, 1, 0)
    if dtype is not None:
        data = data.astype(dtype, copy=False)
    image = nib.Nifti1Image(np.ascontiguousarray(data), volume_to_nifti_affine(volume))
    image.set_sform(image.affine, code=1)
    image.set_qform(image.affine, code=1)
    image.header.set_xyzt_units("mm")
    nib.save(image, str(target))
    return target


def read_nifti(path: str | Path) -> Volume:
    """A NIfTI image as a Volume (``[z, y, x]``, LPS, mm); see the module for the conventions.

    Raises
    ------
    NiftiError
        Not readable as NIfTI, not 3-D (a 4-D image with one volume is taken as 3-D), or a shear
        affine; the message names the file.
    """
    import nibabel as nib

    source = Path(path)
    try:
        image = nib.load(str(source))
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many kinds; ours names the file
        raise NiftiError(f"{source}: not a readable NIfTI image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise NiftiError(f"{source}: a {data.ndim}-D image of shape {data.shape}; a Volume is 3-D "
                         "(split time series or channels first)")
    affine = np.asarray(image.header.get_best_affine(), dtype=float)
    if not np.all(np.isfinite(affine)):
        raise NiftiError(f"{source}: the affine is not finite")
    lps = LPS_TO_RAS @ affine[:3, :3]  # columns: LPS step of one voxel along i, j, k
    spacing_ijk = np.linalg.norm(lps, axis=0)
    if np.any(spacing_ijk <= 0):
        raise NiftiError(f"{source}: an axis of the affine has zero length")
    axes = lps / spacing_ijk
    gram = axes.T @ axes
    if np.max(np.abs(gram - np.eye(3))) > ORTHOGONALITY_TOLERANCE:
        raise NiftiError(f"{source}: the affine shears (axes are not orthogonal: largest |cos| "
                         f"{np.max(np.abs(gram - np.eye(3))):.4f}); resample it to an orthogonal grid first")
    direction = axes.T[::-1]  # rows (z, y, x) = NIfTI axes (k, j, i)
    return Volume(np.ascontiguousarray(np.asarray(data).transpose(2, 1, 0)), tuple(spacing_ijk[::-1]),
                  tuple(LPS_TO_RAS @ affine[:3, 3]), direction)


def labels_on(volume: Volume, labels: Volume, *, source: str = "labels") -> np.ndarray:
    """``labels``' array as a label map on ``volume``'s grid (e.g. a model's NIfTI output for
    :func:`medimg_kernel.seg.write_seg`): integer, same shape, same voxel centres within
    :data:`GRID_TOLERANCE_MM`.

    Raises
    ------
    NiftiError
        Another grid (shape, spacing, position or orientation: nothing is resampled) or
        non-integer values; the message says which.
    """
    if labels.shape != volume.shape:
        raise NiftiError(f"{source}: shape (z, y, x) {labels.shape} differs from the series' {volume.shape}")
    corners = np.array([[0, 0, 0], [volume.shape[0] - 1, volume.shape[1] - 1, volume.shape[2] - 1],
                        [0, volume.shape[1] - 1, 0], [volume.shape[0] - 1, 0, volume.shape[2] - 1]], float)
    distance = float(np.max(np.linalg.norm(volume.index_to_lps(corners) - labels.index_to_lps(corners), axis=1)))
    if distance > GRID_TOLERANCE_MM:
        raise NiftiError(f"{source}: its grid is {distance:.3f} mm away from the series' (another spacing, position "
                         "or orientation); resample it onto the series first")
    array = np.asarray(labels.array)
    if not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise NiftiError(f"{source}: values are not integer labels (dtype {array.dtype})")
        array = array.astype(np.int32)
    return array


__all__ = ["GRID_TOLERANCE_MM", "LPS_TO_RAS", "NiftiError", "labels_on", "read_nifti", "volume_to_nifti_affine",
           "write_nifti"]
