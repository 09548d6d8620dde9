"""Exceptions raised by medimg_kernel.

Every error has one root, :class:`MedImgError`, and also inherits the built-in
exception it specialises (``ValueError``, ``LookupError``, ...), so callers can
catch either.  Errors carry structured fields (the file, the series, the HTTP
status) and their message says what is wrong and, where possible, how to fix it.
Messages never contain patient names or other identifying attributes: only
file paths, UIDs and technical values.
"""

from __future__ import annotations

from os import PathLike


class MedImgError(Exception):
    """Root of every error raised by the platform's own code."""


class ConfigurationError(MedImgError, ValueError):
    """A setting or argument is missing or invalid; the message names it."""


class DicomFileError(MedImgError, ValueError):
    """A single DICOM file or dataset cannot be read or is not usable.

    Attributes
    ----------
    path
        The file (or a description such as ``"dataset 3 of series 1.2.3"``).
    reason
        What is wrong, in words.
    """

    def __init__(self, path: str | PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class SeriesError(MedImgError, ValueError):
    """A series cannot be assembled into a volume.

    Attributes
    ----------
    series_instance_uid
        The SeriesInstanceUID concerned (``"<unknown>"`` if it could not be read).
    reason
        What is wrong, in words, naming the offending instances or positions.
    """

    def __init__(self, series_instance_uid: str | None, reason: str) -> None:
        self.series_instance_uid = series_instance_uid or "<unknown>"
        self.reason = reason
        super().__init__(f"series {self.series_instance_uid}: {reason}")


class MixedSeriesError(SeriesError):
    """Instances of several series, orientations, sizes or modalities were mixed."""


class SeriesGeometryError(SeriesError):
    """Slice positions are inconsistent: missing slices, duplicates, uneven spacing."""


class NotAnImageError(SeriesError):
    """An instance carries no image (e.g. an SR, a SEG or a presentation state)."""


class PixelDataError(SeriesError):
    """Pixel data is missing, truncated or cannot be decoded."""


class SegmentationError(MedImgError, ValueError):
    """A segmentation cannot be written or read (shape, geometry, segments)."""


class RTStructError(SegmentationError):
    """An RT Structure Set cannot be read onto a volume, or written from masks.

    Attributes
    ----------
    sop_instance_uid
        The RT Structure Set's SOPInstanceUID (``"<new>"`` while writing, ``"<unknown>"`` if absent).
    roi
        The ROI (ROIName, or the segment's name while writing) concerned, or ``None``.
    reason
        What is wrong and how to fix it, in words.
    """

    def __init__(self, sop_instance_uid: str | None, reason: str, *, roi: str | None = None) -> None:
        self.sop_instance_uid = sop_instance_uid or "<unknown>"
        self.roi = roi
        self.reason = reason
        where = f"RT Structure Set {self.sop_instance_uid}" + (f", ROI {roi!r}" if roi is not None else "")
        super().__init__(f"{where}: {reason}")


class ReportError(MedImgError, ValueError):
    """A structured report cannot be written or read."""


class DICOMwebError(MedImgError, RuntimeError):
    """A DICOMweb request failed.

    Attributes
    ----------
    status
        The HTTP status code, or ``None`` when no response arrived.
    url
        The request URL without credentials.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        self.status = status
        self.url = url
        super().__init__(message)


class NotFoundError(DICOMwebError, LookupError):
    """The requested study, series or instance does not exist (HTTP 404)."""


class AccessDeniedError(DICOMwebError, PermissionError):
    """The server refused the request (HTTP 401 or 403)."""


class UnknownSegmentTypeError(SegmentationError, LookupError):
    """A segment name is not in the anatomy catalogue (:mod:`medimg_kernel.anatomy`).

    Attributes
    ----------
    name
        The name that was looked up.
    known
        The names the catalogue does know, sorted.
    """

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        super().__init__(
            f"unknown segment type {name!r}; the segment type registry knows {', '.join(known)} "
            "(pass a medimg_kernel.anatomy.SegmentType with its codes, or register one with "
            "medimg_kernel.anatomy.register_segment_type or a [[segment_types]] file)"
        )


class UnsupportedImageError(SeriesError):
    """An image the series reader does not handle: multi-frame or enhanced objects,
    colour images, Modality LUT Sequences. The message says how to convert it."""


class PipelineError(MedImgError, ValueError):
    """A pipeline descriptor is invalid; ``field`` names the offending field.

    Attributes
    ----------
    field
        Path of the offending field inside the descriptor, e.g.
        ``"stages[1].parameters[0].default"`` (``""`` for the descriptor as a whole).
    reason
        What is wrong and how to fix it, in words.
    source
        The descriptor file, or ``""`` for a descriptor built in code.
    """

    def __init__(self, reason: str, *, field: str = "", source: str | PathLike[str] = "") -> None:
        self.reason = reason
        self.field = field
        self.source = str(source)
        super().__init__(reason)

    def prefixed(self, prefix: str) -> "PipelineError":
        """Put ``prefix`` in front of :attr:`field` (used while descending a descriptor)."""
        if prefix:
            joiner = "" if not self.field or self.field.startswith("[") else "."
            self.field = f"{prefix}{joiner}{self.field}" if self.field else prefix
        return self

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        what = f"{self.field}: " if self.field else ""
        return f"{where}{what}{self.reason}"


class ParameterError(PipelineError):
    """A parameter value given for a pipeline run is missing, unknown or invalid.

    Attributes
    ----------
    parameter
        The parameter's name.
    """

    def __init__(self, parameter: str, reason: str, *, field: str | None = None) -> None:
        self.parameter = parameter
        super().__init__(reason, field=f"parameters.{parameter}" if field is None else field)


class ModelNotFoundError(MedImgError, LookupError):
    """No registered model version matches the name and alias (or version) asked for.

    Attributes
    ----------
    name
        The registered model name.
    alias_or_version
        The alias or version number looked up.
    tracking_uri
        The MLflow tracking/registry URI searched.
    """

    def __init__(self, name: str, alias_or_version: str, tracking_uri: str, hint: str = "") -> None:
        self.name = name
        self.alias_or_version = alias_or_version
        self.tracking_uri = tracking_uri
        super().__init__(
            f"no registered model {name!r} with alias or version {alias_or_version!r} in the MLflow registry at "
            f"{tracking_uri}" + (f" ({hint})" if hint else "") + "; train and register one with "
            f"`papermill notebooks/train_segmentation.ipynb out.ipynb -p tracking_uri {tracking_uri} "
            f"-p model_name {name}` or medimg_kernel.registry.ensure_segmentation_model(client, tracking_uri)"
        )


class PlatformAPIError(MedImgError, RuntimeError):
    """A call to the platform API (tasks, review) failed.

    Attributes
    ----------
    status
        The HTTP status code, or ``None`` when the platform could not be reached.
    url
        The request URL.
    """

    def __init__(self, message: str, *, status: int | None = None, url: str = "") -> None:
        self.status = status
        self.url = url
        super().__init__(message)


class ReviewConflictError(PlatformAPIError):
    """The case changed under the reviewer: decided by someone else, no longer waiting (HTTP 409)."""


class CaseClaimedError(ReviewConflictError):
    """Another reviewer holds the claim on the case; ``claim`` says who and until when."""

    def __init__(self, message: str, *, claim: dict[str, str], url: str = "") -> None:
        super().__init__(message, status=409, url=url)
        self.claim = claim
