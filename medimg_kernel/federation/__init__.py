"""Federated training, kernel side: what one site does, the weights it exchanges, MLflow tracking.

* :mod:`.site`: a site's configuration, its training pairs from its own PACS, local training
  and evaluation (:func:`local_train`, :func:`local_evaluate`).
* :mod:`.weights`: weights as ``{name: numpy array}``, checked against the local network.
* :mod:`.tracking`: MLflow tracking of a federated run and registration of its final model.

No Flower here: the Flower apps (``federated/``) adapt these functions. Modules here do not
import each other; they import :mod:`medimg_kernel.training`, :mod:`medimg_kernel.model`,
:mod:`medimg_kernel.datasets`, :mod:`medimg_kernel.client` and lower layers; never
:mod:`medimg_hub`.
"""

from .site import (
    NoTrainingDataError,
    SiteConfig,
    SiteData,
    clear_site_cache,
    load_site_data,
    local_evaluate,
    local_train,
    round_learning_rate,
)
from .tracking import FederatedTracker, latest_federated_run, metric_name, round_history
from .weights import ArchitectureMismatchError, load_state_arrays, network_from_arrays, state_arrays

__all__ = [
    "ArchitectureMismatchError", "NoTrainingDataError", "SiteConfig", "SiteData", "load_site_data",
    "clear_site_cache", "state_arrays", "load_state_arrays", "network_from_arrays", "round_learning_rate",
    "local_train", "local_evaluate",
    "FederatedTracker", "metric_name", "latest_federated_run", "round_history",
]
