"""Voila + headless Chromium, shared by the browser tests and ``benchmarks/bench_viewer.py``.

* :func:`chromium_executable` finds Debian's ``chromium`` (``scripts/bootstrap.sh`` installs
  it); Playwright drives it through ``executable_path`` -- ``playwright install`` is never run.
* :func:`launch_chromium` starts it headless with the flags DESIGN.md §6 found to work
  (``--headless=new --no-sandbox --disable-gpu``: 2-D canvas and WebGL in software).
* :class:`VoilaServer` serves one notebook with the offline ``medimg`` template on a free
  loopback port, in its own process group, and always stops that group.
* :func:`external_requests` lists requests to anything but the loopback server.
* :func:`save_screenshot` writes ``tests/artifacts/<name>.png`` (gitignored).
* :func:`slice_stats` summarises ``window.__medimgViewer`` (viewer.js's instrumentation).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from medimg_hub.servers.process import free_port
from medimg_voila.templates import TEMPLATE_NAME, jupyter_path_env

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Playwright

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"
FIXTURE_DASHBOARDS = REPO / "tests" / "fixtures" / "dashboards"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu"]


def chromium_executable() -> str | None:
    """Path of Debian's chromium (``/usr/bin/chromium``), or None when it is not installed."""
    for candidate in ("/usr/bin/chromium", shutil.which("chromium") or ""):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def launch_chromium(playwright: Playwright) -> Browser:
    """Headless Debian chromium under Playwright; raises FileNotFoundError when absent."""
    exe = chromium_executable()
    if exe is None:
        raise FileNotFoundError("Debian's chromium is not installed: run scripts/bootstrap.sh (apt package chromium)")
    return playwright.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)


class VoilaServer:
    """``voila --template=medimg NOTEBOOK`` on a free 127.0.0.1 port.

    Use as a context manager; :attr:`url` is the page. The server runs in its own process group
    (its kernels too), which :meth:`stop` terminates, then kills after ``grace_s``.
    """

    def __init__(self, notebook: Path, log_path: Path, *, startup_timeout_s: float = 60.0) -> None:
        self.notebook = Path(notebook)
        self.log_path = Path(log_path)
        self.startup_timeout_s = startup_timeout_s
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> VoilaServer:
        env = dict(os.environ)
        env["JUPYTER_PATH"] = jupyter_path_env(env.get("JUPYTER_PATH"))
        env["PYTHONPATH"] = os.pathsep.join([str(REPO), str(REPO / "hub"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        cmd = [sys.executable, "-m", "voila", str(self.notebook), f"--template={TEMPLATE_NAME}", "--no-browser",
               f"--port={self.port}", "--Voila.ip=127.0.0.1", "--Voila.port_retries=0",
               "--VoilaConfiguration.show_tracebacks=True"]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as out:
            self._proc = subprocess.Popen(cmd, cwd=self.notebook.parent, env=env, stdout=out, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"voila exited with {self._proc.returncode}:\n{self.log_tail()}")
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"voila did not listen on port {self.port} within {self.startup_timeout_s} s:\n{self.log_tail()}")

    def stop(self, grace_s: float = 10.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def __enter__(self) -> VoilaServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()


def record_requests(page: Page) -> list[str]:
    """Start recording the URL of every request the page makes; returns the (growing) list."""
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    return urls


def external_requests(urls: list[str]) -> list[str]:
    """The URLs that go anywhere but the loopback interface (``data:``/``blob:`` are local)."""
    return [u for u in urls if urlparse(u).scheme not in ("data", "blob", "about")
            and urlparse(u).hostname not in ("127.0.0.1", "localhost")]


#: Screenshots the role guides (docs/guides) show: the browser tests write them there too, so a
#: run of the tests brings the guides' pictures up to date (commit them with the change they show).
GUIDE_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "guides" / "img"
GUIDE_SHOTS = frozenset({"review-1-worklist-resident", "review-2-case-resident", "review-3-proposed",
                         "review-4-finalised", "review-5-statistics", "datasets-admin-granted", "viewer_demo_outline"})


def save_screenshot(page: Page, name: str) -> Path:
    """Save a full-page screenshot as ``tests/artifacts/<name>.png`` (and in docs/guides/img for a guide's)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if name in GUIDE_SHOTS:
        GUIDE_IMAGES.mkdir(parents=True, exist_ok=True)
        (GUIDE_IMAGES / path.name).write_bytes(path.read_bytes())
    return path


def open_viewer(page: Page, url: str, timeout_s: float = 180.0) -> dict[str, float]:
    """Open the dashboard, wait for the viewer's first image and whole volume; ms since navigation.

    Returns ``window.__medimgViewer``'s times (``firstImageAt``, ``volumeAt``, ``renderAt``,
    ``loadAt``), ``timeOrigin`` (ms since the epoch) and ``domContentLoaded``.
    """
    page.goto(url, wait_until="commit", timeout=timeout_s * 1000)
    page.wait_for_function("window.__medimgViewer && window.__medimgViewer.firstImageAt != null",
                           timeout=timeout_s * 1000, polling=20)
    page.wait_for_function("window.__medimgViewer.volumeAt != null", timeout=timeout_s * 1000, polling=20)
    return page.evaluate("({...window.__medimgViewer, sliceLatenciesMs: undefined, timeOrigin: performance.timeOrigin,"
                         " domContentLoaded: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd})")


def scroll_slices(page: Page, view: str, wheel: int, keys: int, pause_ms: float = 40.0) -> None:
    """Change slice ``wheel`` times with the mouse wheel, then ``keys`` times with ArrowUp, on ``view``,
    once the whole volume is in the browser (viewer.js sets ``volumeAt``; before that the first planes
    show but slice changes have nothing to draw, so a fast scroller on a loaded machine loses some)."""
    page.wait_for_function("window.__medimgViewer && window.__medimgViewer.volumeAt !== null "
                           "&& window.__medimgViewer.volumeAt !== undefined", timeout=60_000)
    canvas = page.locator(f'canvas[data-view="{view}"]')
    box = canvas.bounding_box()
    assert box is not None, f"{view} canvas not visible"
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    for _ in range(wheel):
        page.mouse.wheel(0, -100)
        page.wait_for_timeout(pause_ms)
    canvas.focus()
    for _ in range(keys):
        page.keyboard.press("ArrowUp")
        page.wait_for_timeout(pause_ms)
    page.wait_for_timeout(200)


def slice_stats(page: Page) -> dict[str, Any]:
    """Slice-change latencies recorded by viewer.js: count, median and p95 in ms, and the raw list."""
    values = page.evaluate("window.__medimgViewer.sliceLatenciesMs.slice()")
    ordered = sorted(values)
    p95 = ordered[math.ceil(0.95 * len(ordered)) - 1] if ordered else float("nan")  # nearest rank
    return {"count": len(values), "median_ms": statistics.median(values) if values else float("nan"),
            "p95_ms": p95, "max_ms": max(values, default=float("nan")), "values_ms": values}
