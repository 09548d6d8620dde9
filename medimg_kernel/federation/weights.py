"""Model weights as they travel between the federated server and the sites.

Weights travel as ``{name: numpy array}`` in the network's ``state_dict`` order; arrays that
do not match the site's network (other names or shapes: another architecture) are refused
with :class:`ArchitectureMismatchError` before anything is loaded.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch

from ..errors import MedImgError
from ..model import SegmentationModelConfig, build_network

__all__ = ["ArchitectureMismatchError", "state_arrays", "load_state_arrays", "network_from_arrays"]


class ArchitectureMismatchError(MedImgError, ValueError):
    """Received weights do not fit the site's network (different names or shapes)."""


def state_arrays(network: torch.nn.Module) -> dict[str, np.ndarray]:
    """The network's ``state_dict`` as numpy arrays (CPU copies), in order."""
    return {name: tensor.detach().cpu().numpy().copy() for name, tensor in network.state_dict().items()}


def load_state_arrays(network: torch.nn.Module, arrays: Mapping[str, np.ndarray], *, site: str = "") -> None:
    """Load ``arrays`` into ``network``; :class:`ArchitectureMismatchError` if they don't fit.

    Every name and shape is checked first, so a mismatch leaves ``network`` untouched.
    """
    expected = {name: tuple(t.shape) for name, t in network.state_dict().items()}
    received = {name: tuple(np.shape(a)) for name, a in arrays.items()}
    if expected != received:
        missing = sorted(set(expected) - set(received))[:3]
        extra = sorted(set(received) - set(expected))[:3]
        shapes = [f"{n}: received {received[n]}, local {expected[n]}" for n in expected
                  if n in received and received[n] != expected[n]][:3]
        raise ArchitectureMismatchError(
            f"site {site or '?'}: received weights do not match the local network "
            f"({len(received)} arrays received, {len(expected)} expected; missing {missing}, unexpected {extra}, "
            f"shape differences {shapes}); the server and this site must use the same model-config")
    network.load_state_dict({n: torch.from_numpy(np.asarray(a)) for n, a in arrays.items()}, strict=True)


def network_from_arrays(config: SegmentationModelConfig, arrays: Mapping[str, np.ndarray], *,
                        site: str = "") -> torch.nn.Module:
    """A network for ``config`` holding ``arrays`` (checked by :func:`load_state_arrays`)."""
    network = build_network(config)
    load_state_arrays(network, arrays, site=site)
    return network
