#!/usr/bin/env python3
"""Write the per-room dependency locks, their union and environment.yml from one source.

    python scripts/lock.py           # writes requirements/<room>.lock, requirements.lock, environment.yml
    python scripts/lock.py --check   # exits 1, naming each difference, if any of them has drifted

Run it with the interpreter of the environment that holds every dependency (``.venv/bin/python``
after ``scripts/bootstrap.sh``). The rooms are the extras of pyproject.toml (``ROOMS``); each room's
lock is the transitive closure of the base dependencies plus that extra (an extra may name other
extras: ``medimg-platform[kernel,hub]``), walked through the installed distributions' metadata
(``Requires-Dist``, markers and extras evaluated for CPython 3.11 on Linux x86-64) and pinned to the
installed versions. Nothing is downloaded. ``requirements.lock`` is the union of the room locks (what
the bootstrap and CI install); environment.yml is the conda mirror, generated from the same data.

torch: the installed build is the CPU one (``2.13.0+cpu``); the locks pin its public version
(``torch==2.13.0``), which the CPU build satisfies, and the bootstrap installs that build first. A
lock that would contain a CUDA runtime (``nvidia-*``) or ``triton`` is refused. pip, setuptools and
wheel (the installer's own tools, pulled in by torch's metadata) are not pinned, as pip freeze does.
"""

from __future__ import annotations

import argparse
import difflib
import functools
import importlib.metadata as metadata
import sys
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

PROJECT = "medimg-platform"
#: The rooms, in the order environment.yml lists them; each is an extra of pyproject.toml.
ROOMS = ("kernel", "hub", "federated", "bench", "test")
#: Installer tools: never pinned (as today's requirements.lock and pip freeze).
UNPINNED = frozenset({"pip", "setuptools", "wheel"})
#: Marker environment of the target: CPython 3.11 on Linux x86-64, whatever runs this script. The patch
#: release is the tested one (3.11.7): before 3.11.3, redis also requires async-timeout, which no lock pins.
TARGET = {
    "implementation_name": "cpython", "implementation_version": "3.11.7", "os_name": "posix",
    "platform_machine": "x86_64", "platform_python_implementation": "CPython", "platform_release": "",
    "platform_system": "Linux", "platform_version": "", "python_full_version": "3.11.7",
    "python_version": "3.11", "sys_platform": "linux",
}
ROOT = Path(__file__).resolve().parent.parent


class LockError(Exception):
    """The installed environment cannot produce the locks (a dependency is missing, mismatched or CUDA)."""


def _cuda(canon: str) -> bool:
    return canon.startswith("nvidia-") or canon in {"triton", "pytorch-triton"}


@functools.cache
def installed() -> dict[str, tuple[str, str, tuple[Requirement, ...]]]:
    """{canonical name: (name, version, requirements)} of the running environment's distributions
    (the first on sys.path wins, as for import)."""
    found: dict[str, tuple[str, str, tuple[Requirement, ...]]] = {}
    for dist in metadata.distributions():
        meta = dist.metadata
        requires = tuple(Requirement(line) for line in meta.get_all("Requires-Dist") or [])
        found.setdefault(canonicalize_name(meta["Name"]), (meta["Name"], dist.version, requires))
    return found


def _applies(marker: Marker | None, extras: set[str]) -> bool:
    if marker is None:
        return True
    return any(marker.evaluate({**TARGET, "extra": extra}) for extra in extras)


class Project:
    """pyproject.toml's [project] dependencies and extras."""

    def __init__(self, root: Path) -> None:
        project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
        self.base = [Requirement(r) for r in project.get("dependencies", [])]
        self.extras = {canonicalize_name(name): [Requirement(r) for r in reqs]
                       for name, reqs in project.get("optional-dependencies", {}).items()}

    def extra(self, name: str) -> list[Requirement]:
        try:
            return self.extras[canonicalize_name(name)]
        except KeyError:
            raise LockError(f"pyproject.toml has no extra [{name}]") from None

    def direct(self, room: str) -> list[Requirement]:
        """The room's own requirements (the extra, without references to other extras)."""
        return [r for r in self.extra(room) if canonicalize_name(r.name) != PROJECT]


def closure(project: Project, room: str) -> dict[str, tuple[str, str]]:
    """{canonical name: (distribution name, pinned version)} for base + ``room``, transitively."""
    pinned: dict[str, tuple[str, str]] = {}
    done_extras: dict[str, set[str]] = {}
    todo: list[tuple[Requirement, str]] = [(r, PROJECT) for r in project.base]
    todo += [(Requirement(f"{PROJECT}[{room}]"), PROJECT)]
    while todo:
        req, parent = todo.pop()
        canon = canonicalize_name(req.name)
        if canon == PROJECT:
            for extra in req.extras:
                todo += [(r, f"{PROJECT}[{extra}]") for r in project.extra(extra)]
            continue
        if canon in UNPINNED:
            continue
        if _cuda(canon):
            raise LockError(f"{req} (required by {parent}) is a CUDA package: install torch's CPU build first")
        found = installed().get(canon)
        if found is None:
            raise LockError(f"{req} (required by {parent}) is not installed")
        name, version, requires = found
        if not req.specifier.contains(version, prereleases=True):
            raise LockError(f"{parent} requires {req}, but {name} {version} is installed")
        first = canon not in done_extras
        new = {canonicalize_name(e) for e in req.extras} - done_extras.get(canon, set())
        if not first and not new:
            continue
        done_extras.setdefault(canon, set()).update(new)
        pinned[canon] = (name, Version(version).public)
        evaluate = new | ({""} if first else set())
        todo += [(dep, name) for dep in requires if _applies(dep.marker, evaluate)]
    return pinned


def _lock_text(header: str, pins: dict[str, tuple[str, str]]) -> str:
    lines = sorted(f"{name}=={version}" for name, version in pins.values())
    lines.sort(key=lambda line: line.split("==")[0].lower())
    return header + "".join(line + "\n" for line in lines)


def render(root: Path = ROOT) -> dict[str, str]:
    """{relative path: content} of every generated file."""
    project = Project(root)
    rooms = {room: closure(project, room) for room in ROOMS}
    files: dict[str, str] = {}
    for room, pins in rooms.items():
        files[f"requirements/{room}.lock"] = _lock_text(
            f"# {room}: pyproject.toml's base dependencies + [{room}], every transitive dependency pinned.\n"
            "# Generated by scripts/lock.py (do not edit). Install torch==2.13.0's CPU build first.\n", pins)
    union: dict[str, tuple[str, str]] = {}
    for pins in rooms.values():
        union.update(pins)
    files["requirements.lock"] = _lock_text(
        "# Every room (requirements/*.lock together): what scripts/bootstrap.sh and CI install.\n"
        "# Generated by scripts/lock.py (do not edit). Install torch==2.13.0's CPU build first.\n", union)
    files["environment.yml"] = _environment(project, union)
    return files


def _environment(project: Project, union: dict[str, tuple[str, str]]) -> str:
    out = [
        "# Conda mirror of the pip install: every room's direct requirements at the versions of",
        "# requirements.lock (the exact transitive set). Generated by scripts/lock.py from pyproject.toml",
        "# and the locks: do not edit, run `python scripts/lock.py`.",
        "# System parts (Orthanc + DICOMweb plugin, dcmtk, dicom3tools, redis) come from Debian: scripts/bootstrap.sh.",
        "# torch: the CPU build; install it first on machines where the default channel would pick CUDA.",
        "name: medimg",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - nodejs>=20",
        "  - pip",
        "  - pip:",
    ]
    groups = [("base: medimg_kernel's core", project.base)] + [(f"[{room}]", project.direct(room)) for room in ROOMS]
    extras: dict[str, set[str]] = {}
    for _, reqs in groups:
        for req in reqs:
            extras.setdefault(canonicalize_name(req.name), set()).update(req.extras)
    listed = {"torch"}
    out += ["      - torch==" + union["torch"][1]]
    for title, reqs in groups:
        entries = []
        for req in reqs:
            canon = canonicalize_name(req.name)
            if canon in listed:
                continue
            listed.add(canon)
            extra = f"[{','.join(sorted(extras[canon]))}]" if extras[canon] else ""
            entries.append(f"      - {req.name}{extra}=={union[canon][1]}")
        if entries:
            out += [f"      # {title}", *entries]
    out += ["      - -e ."]
    return "\n".join(out) + "\n"


def _drift(path: str, want: str, have: str | None) -> list[str]:
    if have is None:
        return [f"{path}: missing (run python scripts/lock.py)"]
    if want == have:
        return []
    if not path.endswith(".lock"):
        diff = difflib.unified_diff(have.splitlines(), want.splitlines(), f"{path} (file)", f"{path} (generated)",
                                    lineterm="", n=0)
        return [f"{path}: differs from what scripts/lock.py generates:", *("    " + d for d in diff)]
    pins = lambda text: {l.split("==")[0].lower(): l for l in text.splitlines() if l and not l.startswith("#")}
    w, h = pins(want), pins(have)
    problems = [f"{path}: missing {w[n]}" for n in sorted(w.keys() - h.keys())]
    problems += [f"{path}: not needed {h[n]}" for n in sorted(h.keys() - w.keys())]
    problems += [f"{path}: {h[n]} should be {w[n]}" for n in sorted(w.keys() & h.keys()) if w[n] != h[n]]
    return problems or [f"{path}: differs in comments or order (run python scripts/lock.py)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 naming any drift; write nothing")
    parser.add_argument("--root", type=Path, default=ROOT, help="repository root (default: this checkout)")
    args = parser.parse_args(argv)
    try:
        files = render(args.root)
    except LockError as exc:
        print(f"lock.py: {exc}", file=sys.stderr)
        return 2
    if args.check:
        problems = []
        for path, text in files.items():
            target = args.root / path
            problems += _drift(path, text, target.read_text() if target.exists() else None)
        stale = {str(p.relative_to(args.root)) for p in (args.root / "requirements").glob("*.lock")} - files.keys()
        problems += [f"{p}: not a room of scripts/lock.py" for p in sorted(stale)]
        for problem in problems:
            print(f"drift: {problem}", file=sys.stderr)
        return 1 if problems else 0
    (args.root / "requirements").mkdir(exist_ok=True)
    for path, text in files.items():
        (args.root / path).write_text(text)
        print(f"wrote {path}" + (f" ({sum(not l.startswith('#') for l in text.splitlines())} pins)" if path.endswith(".lock") else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
