"""Run stage notebooks with papermill, in a kernel kept warm between jobs.

A fresh kernel costs ~1 s before any import and the stage's imports (monai ~6 s) come on top
(DESIGN.md §6): per study that would dominate. A worker therefore keeps one kernel per kernel
name and runs each job's notebook in it through papermill's own client (parameters injected,
outputs and errors recorded in the executed notebook as usual). Before each job the kernel's
namespace and output cache are cleared and its working directory set to the notebook's folder;
imported modules stay loaded, which is the point. A kernel that died is replaced; each kernel
is recycled after ``max_runs`` jobs to bound leaks. ``warm=False`` gives papermill's default
fresh-kernel behaviour.

The kernel is a child of the worker; ipykernel exits when its parent dies (it polls
``JPY_PARENT_PID``), so a worker killed with SIGKILL leaves no kernel behind.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import papermill
from jupyter_client.manager import AsyncKernelManager
from papermill.clientwrap import PapermillNotebookClient
from papermill.engines import NBClientEngine, papermill_engines
from papermill.exceptions import PapermillExecutionError
from papermill.utils import merge_kwargs, remove_args

from medimg_kernel.errors import MedImgError

log = logging.getLogger(__name__)

ENGINE_NAME = "medimg-warm"
#: Jobs run in one kernel before it is replaced.
DEFAULT_MAX_RUNS = 50


class StageExecutionError(MedImgError, RuntimeError):
    """A stage notebook raised; the executed notebook (with the traceback) is kept.

    Attributes
    ----------
    notebook
        Path of the executed notebook.
    cell_index, ename, evalue
        Where and what failed, as papermill reports it.
    """

    def __init__(self, notebook: Path, cell_index: int | None, ename: str, evalue: str) -> None:
        self.notebook = notebook
        self.cell_index = cell_index
        self.ename = ename
        self.evalue = evalue
        where = f"cell {cell_index}" if cell_index is not None else "the notebook"
        super().__init__(f"{ename} in {where} of {notebook.name}: {evalue} (executed notebook: {notebook})")


@dataclass
class _WarmKernel:
    manager: AsyncKernelManager
    runs: int = 0
    #: The kernel client, kept between jobs: connecting a new one costs ~0.2 s (jupyter_client
    #: flushes IOPub for 0.2 s in ``wait_for_ready``). Jobs run in one thread, whose event loop
    #: jupyter_core keeps, so the client's channels stay usable.
    client: Any = None


class WarmKernelPool:
    """One live kernel per kernel name in this process (a worker runs one job at a time)."""

    def __init__(self, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        self.max_runs = max_runs
        self._kernels: dict[str, _WarmKernel] = {}
        self._lock = threading.Lock()

    def acquire(self, kernel_name: str) -> _WarmKernel:
        """The kernel for ``kernel_name``: the warm one, or a new manager if it died or is worn out."""
        with self._lock:
            kernel = self._kernels.get(kernel_name)
            if kernel is not None and (kernel.runs >= self.max_runs or not _alive(kernel.manager)):
                log.info("replacing kernel %s after %d runs", kernel_name, kernel.runs)
                _shutdown(kernel.manager, kernel.client)
                kernel = None
            if kernel is None:
                kernel = _WarmKernel(AsyncKernelManager(kernel_name=kernel_name))
                self._kernels[kernel_name] = kernel
            kernel.runs += 1
            return kernel

    def interrupt(self, kernel_name: str) -> None:
        """Send SIGINT to the running kernel (safe from another thread): the current cell raises."""
        kernel = self._kernels.get(kernel_name)
        if kernel is not None and kernel.manager.has_kernel:
            from jupyter_core.utils import run_sync

            run_sync(kernel.manager.interrupt_kernel)()

    def discard(self, kernel_name: str) -> None:
        """Shut a kernel down (after a failure that may have left it in a bad state)."""
        with self._lock:
            kernel = self._kernels.pop(kernel_name, None)
        if kernel is not None:
            _shutdown(kernel.manager, kernel.client)

    def shutdown(self) -> None:
        for name in list(self._kernels):
            self.discard(name)


def _alive(manager: AsyncKernelManager) -> bool:
    if not manager.has_kernel:
        return True  # not started yet: nbclient starts it
    return bool(manager.provisioner is not None and manager.provisioner.process is not None
                and manager.provisioner.process.poll() is None)


def _shutdown(manager: AsyncKernelManager, client: Any = None) -> None:
    if client is not None:
        client.stop_channels()
    if manager.has_kernel:
        try:
            from jupyter_core.utils import run_sync

            run_sync(manager.shutdown_kernel)(now=True)
        except Exception:  # noqa: BLE001 - best effort: the kernel may already be gone
            log.warning("kernel did not shut down cleanly", exc_info=True)


#: Clears the previous job's variables and output cache in ~5 ms. (``%reset -f`` does the
#: same plus a full garbage collection: ~0.6 s per job once torch and monai are loaded.)
_RESET_NAMESPACE = """\
_medimg_ip = get_ipython()
_medimg_keep = set(_medimg_ip.user_ns_hidden) | {"__name__", "__builtins__", "__doc__", "__package__", "__loader__", "__spec__"}
for _medimg_key in [k for k in _medimg_ip.user_ns if k not in _medimg_keep and not k.startswith("_medimg")]:
    del _medimg_ip.user_ns[_medimg_key]
_medimg_ip.user_ns["Out"].clear()
del _medimg_ip, _medimg_keep
"""


class _ResettingClient(PapermillNotebookClient):
    """papermill's client that first clears the warm kernel's namespace and sets its cwd."""

    def __init__(self, nb_man: Any, *, workdir: str, **kw: Any) -> None:
        super().__init__(nb_man, **kw)
        self.workdir = workdir

    def papermill_execute_cells(self) -> None:
        prelude = _RESET_NAMESPACE + f"__import__('os').chdir({self.workdir!r})\n"
        reply = self.wait_for_reply(self.kc.execute(prelude, silent=True, store_history=False))
        if reply is None or reply["content"].get("status") != "ok":
            detail = reply["content"].get("evalue", "") if reply else "no reply"
            raise RuntimeError(f"the warm kernel did not accept the reset before the job: {detail}")
        super().papermill_execute_cells()


class WarmKernelEngine(NBClientEngine):
    """papermill engine running notebooks in the warm kernels of the ``pool`` it is given.

    Stateless: the pool travels with each call (papermill passes engine keyword arguments
    through), so every :class:`NotebookRunner` owns its kernels.
    """

    @classmethod
    def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, log_output: bool = False,
                                 stdout_file: Any = None, stderr_file: Any = None, start_timeout: int = 60,
                                 execution_timeout: int | None = None, **kwargs: Any) -> Any:
        kwargs = remove_args(["input_path", "timeout", "startup_timeout"], **kwargs)
        workdir = kwargs.pop("cwd", None) or str(Path.cwd())
        pool: WarmKernelPool = kwargs.pop("pool")
        kernel = pool.acquire(kernel_name)
        final = merge_kwargs(kwargs, timeout=execution_timeout, startup_timeout=start_timeout,
                             kernel_name=kernel_name, log=log, log_output=log_output,
                             stdout_file=stdout_file, stderr_file=stderr_file)
        client = _ResettingClient(nb_man, km=kernel.manager, workdir=workdir, **final)
        client.kc = kernel.client  # None the first time: nbclient connects one
        try:
            return client.execute(cwd=workdir)
        finally:
            kernel.client = client.kc


@dataclass(frozen=True)
class NotebookRun:
    """An executed notebook and how long it took."""

    output_path: Path
    seconds: float


class NotebookRunner:
    """Runs stage notebooks with papermill; owns the warm kernels it reuses between jobs.

    One per worker process (:class:`medimg_hub.pipeline.worker.JobRunner` holds it). With
    ``warm=False`` every run starts a fresh kernel (papermill's default engine).
    """

    def __init__(self, *, warm: bool = True, max_runs: int = DEFAULT_MAX_RUNS) -> None:
        self.warm = warm
        self.pool = WarmKernelPool(max_runs)
        papermill_engines.register(ENGINE_NAME, WarmKernelEngine)  # idempotent; the engine holds no state

    def run(self, notebook: Path, output_path: Path, parameters: dict[str, Any], *, kernel_name: str = "python3",
            timeout_s: float | None = None) -> NotebookRun:
        """Execute ``notebook`` with ``parameters`` injected; the executed copy goes to ``output_path``.

        Raises
        ------
        StageExecutionError
            When a cell raised; the executed notebook with the traceback is at ``output_path``.
        """
        output_path.parent.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        engine = {"engine_name": ENGINE_NAME, "pool": self.pool} if self.warm else {}
        try:
            papermill.execute_notebook(
                str(notebook), str(output_path), parameters=parameters, kernel_name=kernel_name,
                cwd=str(notebook.parent), progress_bar=False,
                execution_timeout=int(timeout_s) if timeout_s else None, **engine,
            )
        except PapermillExecutionError as exc:
            self.discard(kernel_name)  # do not carry a half-run job's state into the next
            raise StageExecutionError(output_path, exc.cell_index, exc.ename, exc.evalue) from exc
        except Exception:
            self.discard(kernel_name)
            raise
        return NotebookRun(output_path, time.perf_counter() - start)

    def interrupt(self, kernel_name: str) -> None:
        """Interrupt the cell running in ``kernel_name``'s warm kernel (cancel, lost job)."""
        self.pool.interrupt(kernel_name)

    def discard(self, kernel_name: str) -> None:
        """Drop ``kernel_name``'s warm kernel (the next run starts a fresh one)."""
        if self.warm:
            self.pool.discard(kernel_name)

    def shutdown(self) -> None:
        """Shut every warm kernel down (at worker exit)."""
        self.pool.shutdown()
