"""Acquisition profiles of the synthetic sites imaged by :func:`medimg_kernel.phantom.make_phantom`.

A :class:`SiteProfile` is how one (synthetic) site acquires an abdominal CT: slice
spacing, matrix, field of view, noise and grid orientation. :data:`DEFAULT_SITES` are
three sites that differ in slice spacing, field of view and noise, one of them with an
oblique (tilted and rotated) grid; :func:`site_profiles` derives more, deterministically.
All names here are re-exported by :mod:`medimg_kernel.phantom`.

Everything here is synthetic; the institution names are invented.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import ConfigurationError


@dataclass(frozen=True)
class SiteProfile:
    """How one (synthetic) site acquires an abdominal CT.

    Parameters
    ----------
    name
        Short site code used in identifiers, e.g. ``"SITEA"``.
    institution_name, manufacturer
        DICOM InstitutionName and Manufacturer written into the series.
    slice_spacing_mm
        Distance between slice centres along the slice normal (mm); also the
        slice thickness.
    matrix
        ``(rows, columns)`` of each slice.
    field_of_view_mm
        Reconstruction diameter (mm); pixels are square, ``fov / max(matrix)``.
    n_slices
        Number of slices, centred on the organs.
    noise_hu
        Standard deviation of the image noise (HU).
    tilt_deg
        Rotation of the grid about the patient's left-right (LPS x) axis, like
        a gantry tilt (degrees).
    rotation_deg
        In-plane rotation about the cranio-caudal (LPS z) axis (degrees).
    """

    name: str
    institution_name: str
    manufacturer: str
    slice_spacing_mm: float
    matrix: tuple[int, int]
    field_of_view_mm: float
    n_slices: int
    noise_hu: float
    tilt_deg: float = 0.0
    rotation_deg: float = 0.0

    def __post_init__(self) -> None:
        checks = {
            "slice_spacing_mm": 0.3 <= self.slice_spacing_mm <= 10,
            "matrix": len(self.matrix) == 2 and all(16 <= m <= 1024 for m in self.matrix),
            "field_of_view_mm": 100 <= self.field_of_view_mm <= 600,
            "n_slices": 1 <= self.n_slices <= 1000,
            "noise_hu": 0 <= self.noise_hu <= 200,
            "tilt_deg": abs(self.tilt_deg) <= 30,
            "rotation_deg": abs(self.rotation_deg) <= 30,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad or not self.name.isalnum():
            raise ConfigurationError(
                f"SiteProfile {self.name!r}: invalid {', '.join(bad) or 'name (letters and digits only)'}; "
                "expected spacing 0.3–10 mm, matrix 16–1024, FOV 100–600 mm, 1–1000 slices, "
                "noise 0–200 HU, |tilt|, |rotation| ≤ 30°"
            )

    @property
    def pixel_spacing_mm(self) -> float:
        """In-plane pixel size (mm)."""
        return self.field_of_view_mm / max(self.matrix)


DEFAULT_SITES: tuple[SiteProfile, ...] = (
    SiteProfile("SITEA", "Northfield General Hospital (synthetic)", "MEDIMG SYNTHETIC A",
                slice_spacing_mm=2.5, matrix=(256, 256), field_of_view_mm=380.0, n_slices=96, noise_hu=12.0),
    SiteProfile("SITEB", "Lakeside University Clinic (synthetic)", "MEDIMG SYNTHETIC B",
                slice_spacing_mm=5.0, matrix=(256, 256), field_of_view_mm=420.0, n_slices=50, noise_hu=7.0),
    SiteProfile("SITEC", "Harbour District Hospital (synthetic)", "MEDIMG SYNTHETIC C",
                slice_spacing_mm=1.5, matrix=(256, 256), field_of_view_mm=360.0, n_slices=160, noise_hu=18.0,
                tilt_deg=6.0, rotation_deg=3.0),
)


def site_profiles(n_sites: int) -> tuple[SiteProfile, ...]:
    """``n_sites`` profiles: :data:`DEFAULT_SITES` first, then derived ones.

    Site ``i ≥ 3`` copies ``DEFAULT_SITES[i % 3]`` with the name ``SITE<letter>``,
    noise scaled by ``1 + 0.2·(i // 3)`` and the in-plane rotation shifted by
    ``2°·(i // 3)``, so the list is deterministic. At most 26 sites (A–Z).
    """
    if not 1 <= n_sites <= 26:
        raise ConfigurationError(f"n_sites must be 1–26 (one letter per site); got {n_sites}")
    sites = list(DEFAULT_SITES[:n_sites])
    for i in range(len(sites), n_sites):
        base, generation = DEFAULT_SITES[i % len(DEFAULT_SITES)], i // len(DEFAULT_SITES)
        letter = chr(ord("A") + i)
        sites.append(replace(
            base, name=f"SITE{letter}", institution_name=f"Site {letter} Hospital (synthetic)",
            noise_hu=base.noise_hu * (1 + 0.2 * generation), rotation_deg=base.rotation_deg + 2.0 * generation,
        ))
    return tuple(sites)
