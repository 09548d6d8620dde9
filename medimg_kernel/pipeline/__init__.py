"""Pipeline descriptors: what a pipeline is made of, validated once constructed.

* :mod:`.parameters`: parameter types and the coercion of run values (UIDs, model references).
* :mod:`.stages`: stage kinds, retry policies and stage descriptors.
* :mod:`.descriptor`: the pipeline descriptor (dependencies, cycles) and :func:`validate_parameters`.
* :mod:`.loading`: the ``pipeline.yaml`` format, :func:`load_pipeline` and :func:`discover_pipelines`.
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
