"""Pairing SEG frames with the slices of a volume, and decoding them into masks.

Used by :mod:`medimg_kernel.seg.sop`. When writing, the volume's source CT
headers are sorted along the slice normal (:func:`medimg_kernel.series.geometry.slice_order`)
and checked against the volume's grid before highdicom sees them, since highdicom
pairs frame ``i`` with ``source_images[i]`` without checking. When reading, each frame
is matched to a slice by the SOP Instance UID it references (when ``volume.sources``
are known) or by its ImagePositionPatient, and every frame's position, orientation and
pixel spacing are checked against the grid (within ``POSITION_TOLERANCE_MM``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydicom.dataset import Dataset

from ..errors import SegmentationError
from ..series.geometry import slice_order
from ..volume import Volume

__all__ = ["SEGMENTATION_TYPES", "POSITION_TOLERANCE_MM", "sorted_sources", "decode_segments"]

#: The SegmentationType values written and read.
SEGMENTATION_TYPES = ("BINARY", "LABELMAP")
#: Largest distance (mm) between a frame's or slice's position and the volume's grid.
POSITION_TOLERANCE_MM = 0.05


def _source_positions(volume: Volume) -> np.ndarray:
    """ImagePositionPatient (LPS mm) of each of ``volume.sources``, in their order: ``(n, 3)``."""
    return np.array([[float(v) for v in ds.ImagePositionPatient] for ds in volume.sources])


def sorted_sources(volume: Volume) -> list[Dataset]:
    """``volume.sources`` sorted along the slice normal, checked against ``volume``'s grid.

    Raises
    ------
    SegmentationError
        No sources, sources of several series or without position, duplicate instances, or
        sources whose plane or positions do not match the grid.
    """
    if not volume.sources:
        raise SegmentationError(
            "volume has no source instances (Volume.sources is empty): a SEG must reference its CT series; "
            "read the volume with read_series"
        )
    first = volume.sources[0]
    for ds in volume.sources:
        if ds.get("SeriesInstanceUID") != first.get("SeriesInstanceUID") or "ImagePositionPatient" not in ds:
            raise SegmentationError(
                f"source {ds.get('SOPInstanceUID')} is not a slice of series {first.get('SeriesInstanceUID')}"
            )
    if len({ds.SOPInstanceUID for ds in volume.sources}) != len(volume.sources):
        raise SegmentationError("volume.sources hold the same SOPInstanceUID more than once")
    positions = _source_positions(volume)
    order = slice_order(positions, volume.direction[0])
    sources = [volume.sources[k] for k in order]
    _check_plane(first, volume, f"source series {first.SeriesInstanceUID}")
    _check_positions(positions[order], volume, "source slice")
    return sources


def _check_plane(ds: Dataset, volume: Volume, what: str, *, orientation: Sequence[float] | None = None,
                 spacing: Sequence[float] | None = None) -> None:
    """Rows/Columns, ImageOrientationPatient and PixelSpacing of ``ds`` against ``volume``'s grid."""
    if (int(ds.Rows), int(ds.Columns)) != volume.shape[1:]:
        raise SegmentationError(f"{what}: {ds.Rows}x{ds.Columns} pixels but the volume has {volume.shape[1:]} (y, x)")
    iop = np.array([float(v) for v in (orientation if orientation is not None else ds.ImageOrientationPatient)])
    expected = np.concatenate([volume.direction[2], volume.direction[1]])
    if not np.allclose(iop, expected, atol=1e-4):
        raise SegmentationError(f"{what}: ImageOrientationPatient {iop.round(5).tolist()} differs from the volume's")
    pixel_spacing = np.array([float(v) for v in (spacing if spacing is not None else ds.PixelSpacing)])
    if not np.allclose(pixel_spacing, volume.spacing[1:], atol=1e-3):
        raise SegmentationError(f"{what}: PixelSpacing {pixel_spacing.tolist()} differs from the volume's {volume.spacing[1:]}")


def _check_positions(positions: np.ndarray, volume: Volume, what: str, slices: np.ndarray | None = None) -> None:
    """Each ImagePositionPatient row must be the volume's position of slice ``slices[i]`` (default ``i``)."""
    slices = np.arange(volume.shape[0]) if slices is None else slices
    expected = volume.index_to_lps(np.stack([slices, np.zeros_like(slices), np.zeros_like(slices)], axis=1))
    error = np.linalg.norm(positions - expected, axis=1)
    if error.size and error.max() > POSITION_TOLERANCE_MM:
        bad = int(np.argmax(error))
        raise SegmentationError(
            f"{what} {bad} lies {error[bad]:.3f} mm from slice {int(slices[bad])} of the volume's grid "
            f"(tolerance {POSITION_TOLERANCE_MM} mm): the SEG and the volume do not share a geometry"
        )


def _frame_slices(seg: Dataset, volume: Volume) -> tuple[np.ndarray, np.ndarray]:
    """(slice index, ImagePositionPatient) of every frame, by referenced SOP Instance UID or position."""
    index_of = {}
    if volume.sources:
        order = slice_order(_source_positions(volume), volume.direction[0])
        index_of = {str(volume.sources[k].SOPInstanceUID): z for z, k in enumerate(order)}
    shared = seg.SharedFunctionalGroupsSequence[0]
    slices, positions = [], []
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        plane = frame.get("PlanePositionSequence") or shared.get("PlanePositionSequence")
        if not plane:
            raise SegmentationError(f"SEG {seg.SOPInstanceUID}: frame {number} has no PlanePositionSequence")
        position = np.array([float(v) for v in plane[0].ImagePositionPatient])
        uids = [src.ReferencedSOPInstanceUID for d in frame.get("DerivationImageSequence", [])
                for src in d.get("SourceImageSequence", [])]
        if index_of and uids:
            known = [index_of[u] for u in uids if u in index_of]
            if not known:
                raise SegmentationError(
                    f"SEG {seg.SOPInstanceUID}: frame {number} references instance {uids[0]}, "
                    f"which is not a slice of series {volume.series_instance_uid or '<volume>'}"
                )
            slices.append(known[0])
        else:
            k = float(volume.lps_to_index(position)[0])
            slices.append(int(round(k)))
        positions.append(position)
    return np.array(slices, dtype=int), np.array(positions).reshape(-1, 3)


def _check_seg_grid(seg: Dataset, volume: Volume) -> None:
    """Frame of reference, series reference and in-plane geometry of ``seg`` against ``volume``."""
    if volume.frame_of_reference_uid and seg.get("FrameOfReferenceUID") != volume.frame_of_reference_uid:
        raise SegmentationError(f"SEG {seg.SOPInstanceUID} is in another frame of reference than the volume")
    if volume.series_instance_uid:
        referenced = {str(s.SeriesInstanceUID) for s in seg.get("ReferencedSeriesSequence", [])}
        if volume.series_instance_uid not in referenced:
            raise SegmentationError(
                f"SEG {seg.SOPInstanceUID} does not reference series {volume.series_instance_uid} "
                f"(it references {sorted(referenced) or 'no series'})"
            )
    shared = seg.SharedFunctionalGroupsSequence[0]
    orientation = shared.PlaneOrientationSequence[0].ImageOrientationPatient
    spacing = shared.PixelMeasuresSequence[0].PixelSpacing
    _check_plane(seg, volume, f"SEG {seg.SOPInstanceUID}", orientation=orientation, spacing=spacing)


def decode_segments(seg: Dataset, volume: Volume, n_segments: int) -> np.ndarray:
    """Boolean masks ``(n_segments, z, y, x)`` from the frames of ``seg``.

    Parameters
    ----------
    seg
        A BINARY or LABELMAP SEG of ``volume``'s series.
    volume
        The segmented series; frames are matched to its slices and checked against its grid.
    n_segments
        The number of segments described by ``seg``.

    Raises
    ------
    SegmentationError
        An unsupported SegmentationType, or frames that do not lie on the grid or
        reference another series.
    """
    seg_type = str(seg.get("SegmentationType", ""))
    if seg_type not in SEGMENTATION_TYPES:
        raise SegmentationError(f"SEG {seg.SOPInstanceUID}: SegmentationType {seg_type!r} is not supported (BINARY, LABELMAP)")
    _check_seg_grid(seg, volume)
    slices, positions = _frame_slices(seg, volume)
    if slices.size and (slices.min() < 0 or slices.max() >= volume.shape[0]):
        raise SegmentationError(f"SEG {seg.SOPInstanceUID}: frames lie outside the volume's {volume.shape[0]} slices")
    _check_positions(positions, volume, f"SEG {seg.SOPInstanceUID} frame", slices)
    frames = seg.pixel_array.reshape(-1, *volume.shape[1:])
    masks = np.zeros((n_segments, *volume.shape), dtype=bool)
    if seg_type == "LABELMAP":
        for frame, z in zip(frames, slices):
            for number in np.unique(frame[frame > 0]):
                if number > n_segments:
                    raise SegmentationError(f"SEG {seg.SOPInstanceUID}: pixel value {number} has no segment")
                masks[number - 1, z] |= frame == number
        return masks
    shared = seg.SharedFunctionalGroupsSequence[0]
    for frame, z, item in zip(frames, slices, seg.PerFrameFunctionalGroupsSequence):
        identification = item.get("SegmentIdentificationSequence") or shared.get("SegmentIdentificationSequence")
        if not identification:
            raise SegmentationError(f"SEG {seg.SOPInstanceUID}: a frame has no SegmentIdentificationSequence")
        number = int(identification[0].ReferencedSegmentNumber)
        masks[number - 1, z] |= frame.astype(bool)
    return masks
