"""Pipeline descriptors: what a pipeline is made of, validated once constructed.

* :mod:`.parameters`: parameter types and the coercion of run values (UIDs, model references).
* :mod:`.stages`: stage kinds, retry policies and stage descriptors.
* :mod:`.schema`: the ``pipeline.yaml`` format, checked key by key into descriptor arguments.
* :mod:`.descriptor`: the pipeline descriptor (dependencies, cycles) and :func:`validate_parameters`.
* :mod:`.loading`: reading ``pipeline.yaml`` files: :func:`load_pipeline` and :func:`discover_pipelines`.

Each module imports only those above it in this list, and :mod:`medimg_kernel.errors`
(plus PyYAML in ``loading``); never :mod:`medimg_hub` or any other part of medimg_kernel.
"""

from .descriptor import PipelineDescriptor, validate_parameters
from .loading import DESCRIPTOR_FILE, discover_pipelines, load_pipeline
from .parameters import ParameterDescriptor, ParameterType, is_identifier
from .stages import DEFAULT_TIMEOUT_S, DEFAULT_WORKER_GROUP, RetryPolicy, StageDescriptor, StageKind

__all__ = [
    "DEFAULT_TIMEOUT_S", "DEFAULT_WORKER_GROUP", "DESCRIPTOR_FILE", "ParameterDescriptor",
    "ParameterType", "PipelineDescriptor", "RetryPolicy", "StageDescriptor", "StageKind",
    "discover_pipelines", "load_pipeline", "validate_parameters",
]
