"""The machine's GPU pool: one device per engineer-GPU server, released when it stops."""

from __future__ import annotations

import logging
import threading

from medimg_kernel.errors import MedImgError

log = logging.getLogger(__name__)


class GpuPoolExhaustedError(MedImgError, RuntimeError):
    """Every GPU of the pool is in use; the message names who holds them."""


class GpuPool:
    """Allocate CUDA device ids to servers, one each.

    Parameters
    ----------
    devices
        CUDA device ids (as in ``CUDA_VISIBLE_DEVICES``) this machine lends to servers.

    Notes
    -----
    One instance is shared by every spawner of the hub (set as a spawner trait in the config).
    The hub is single-threaded (tornado), the lock only guards helper threads.
    """

    def __init__(self, devices: tuple[str, ...] | list[str]) -> None:
        self.devices = tuple(devices)
        self._owner_of: dict[str, str] = {}
        self._lock = threading.Lock()

    def __deepcopy__(self, memo: dict[int, object]) -> GpuPool:
        """The pool itself: traitlets deep-copies config values, but every spawner must share one pool."""
        return self

    def allocate(self, owner: str) -> str:
        """A free device for ``owner`` (the one it holds already, if any).

        Raises
        ------
        GpuPoolExhaustedError
            If every device is held by another server.
        """
        with self._lock:
            for device, holder in self._owner_of.items():
                if holder == owner:
                    return device
            for device in self.devices:
                if device not in self._owner_of:
                    self._owner_of[device] = owner
                    log.info("GPU %s allocated to %s", device, owner)
                    return device
            holders = ", ".join(f"{d}: {o}" for d, o in sorted(self._owner_of.items()))
            raise GpuPoolExhaustedError(
                f"all {len(self.devices)} GPU(s) of this machine are in use ({holders}); "
                "start the 'engineer (CPU)' profile, or try again when a GPU server stops"
            )

    def claim(self, owner: str, device: str) -> None:
        """Record that ``owner`` holds ``device`` (a server found running after a hub restart)."""
        with self._lock:
            if device in self.devices:
                self._owner_of[device] = owner

    def release(self, owner: str) -> str | None:
        """Give back the device ``owner`` holds; returns it, or None if it held none."""
        with self._lock:
            for device, holder in list(self._owner_of.items()):
                if holder == owner:
                    del self._owner_of[device]
                    log.info("GPU %s released by %s", device, owner)
                    return device
        return None

    def in_use(self) -> dict[str, str]:
        """Device id → owner, for the devices in use."""
        with self._lock:
            return dict(self._owner_of)
