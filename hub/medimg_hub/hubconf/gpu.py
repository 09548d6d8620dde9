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


#: ``[hub] gpu_devices`` value meaning "the GPUs nvidia-smi lists".
AUTO = "auto"
#: Seconds nvidia-smi may take to list the devices.
NVIDIA_SMI_TIMEOUT_S = 20.0


def detect_gpus(nvidia_smi: str = "nvidia-smi") -> tuple[str, ...]:
    """CUDA device indices of this machine's NVIDIA GPUs, as ``nvidia-smi`` lists them; none when the
    tool is missing or fails (no driver, no device): then the machine honestly lends no GPU."""
    import shutil
    import subprocess

    if shutil.which(nvidia_smi) is None:
        return ()
    try:
        listed = subprocess.run([nvidia_smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                                text=True, timeout=NVIDIA_SMI_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.warning("nvidia-smi did not list the GPUs (%s): lending none", type(exc).__name__)
        return ()
    if listed.returncode != 0:
        log.warning("nvidia-smi failed (exit %d): lending no GPU: %s", listed.returncode, listed.stderr.strip()[:200])
        return ()
    return tuple(line.strip() for line in listed.stdout.splitlines() if line.strip().isdigit())


def pool_devices(setting: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The devices of ``[hub] gpu_devices``: ``["auto"]`` = what :func:`detect_gpus` finds, else as listed."""
    if list(setting) == [AUTO]:
        return detect_gpus()
    return tuple(setting)
