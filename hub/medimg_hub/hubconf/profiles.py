"""Server profiles per role: one definition, rendered for the local spawners and for KubeSpawner.

A profile says what kind of server a role gets (JupyterLab, or a Voila-only dashboard server)
and whether it holds a GPU. Which profiles a user may start follows from their hub groups;
the spawner enforces it for every spawn (form and REST), see :mod:`.spawner`.
"""

from __future__ import annotations

import html
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from medimg_hub.hubconf.roles import ATTENDINGS, DIRECTORS, ENGINEERS, RESIDENTS

#: Where the Voila apps live, relative to the repository (or the image's working directory).
DASHBOARDS = Path("dashboards")


@dataclass(frozen=True)
class Profile:
    """One kind of user server.

    Attributes
    ----------
    slug
        Stable id, the value of ``user_options["profile"]``.
    display_name, description
        What the spawn form shows.
    groups
        Hub groups allowed to start it.
    kind
        ``"lab"`` (JupyterLab through jupyterhub-singleuser) or ``"voila"`` (a Voila-only
        server rendering ``dashboard`` and nothing else).
    dashboard
        The notebook a Voila server renders, relative to :data:`DASHBOARDS`.
    gpu
        Whether the server holds one GPU of the pool.
    """

    slug: str
    display_name: str
    description: str
    groups: tuple[str, ...]
    kind: Literal["lab", "voila"] = "lab"
    dashboard: str = ""
    gpu: bool = False


PROFILES: tuple[Profile, ...] = (
    Profile("engineer-gpu", "Engineer (GPU)", "JupyterLab with one GPU of this machine's pool.", (ENGINEERS,), gpu=True),
    Profile("engineer-cpu", "Engineer (CPU)", "JupyterLab, CPU only.", (ENGINEERS,)),
    Profile("clinician", "Clinician worklist", "Review AI results (Voila dashboard).", (RESIDENTS, ATTENDINGS),
            kind="voila", dashboard="worklist.ipynb"),
    Profile("director", "Director statistics", "Throughput and review statistics (Voila dashboard).", (DIRECTORS,),
            kind="voila", dashboard="statistics.ipynb"),
)


class ProfileNotAllowedError(PermissionError):
    """The requested profile is unknown or not granted to the user's groups."""


def profiles_for_groups(groups: Iterable[str], profiles: Iterable[Profile] = PROFILES, *,
                        gpus: bool = True) -> list[Profile]:
    """The profiles a member of ``groups`` may start, in offering order; ``gpus=False`` (the machine
    lends no GPU) leaves out the GPU profiles rather than offer a GPU that is not there."""
    member = set(groups)
    return [p for p in profiles if member & set(p.groups) and (gpus or not p.gpu)]


def choose_profile(slug: str | None, groups: Iterable[str], username: str,
                   profiles: Iterable[Profile] = PROFILES, *, gpus: bool = True) -> Profile:
    """The profile to start for a request, enforcing the user's groups.

    Parameters
    ----------
    slug
        The requested profile; None or empty = the first profile the user may start.
    groups
        The user's hub groups.
    username
        For the error message.

    Raises
    ------
    ProfileNotAllowedError
        If no profile fits the groups, or ``slug`` is unknown or not granted.
    """
    groups = sorted(groups)
    allowed = profiles_for_groups(groups, profiles, gpus=gpus)
    if not allowed:
        raise ProfileNotAllowedError(
            f"user {username!r} (groups {groups}) may start no server profile; an admin must add them "
            f"to one of the role groups {sorted({g for p in PROFILES for g in p.groups})}"
        )
    if not slug:
        return allowed[0]
    for profile in allowed:
        if profile.slug == slug:
            return profile
    known = [p.slug for p in PROFILES]
    reason = ("is not a known profile" if slug not in known else
              "needs a GPU and this machine lends none" if not gpus and any(p.slug == slug and p.gpu for p in PROFILES)
              else "is not allowed for your groups")
    raise ProfileNotAllowedError(
        f"profile {slug!r} {reason}; user {username!r} may start: {[p.slug for p in allowed]}"
    )


def server_command(profile: Profile, python: str, dashboards_dir: Path) -> list[str]:
    """The single-user server's command line for ``profile``."""
    if profile.kind == "voila":
        return [python, "-m", "medimg_voila.app", str(dashboards_dir / profile.dashboard)]
    return [python, "-m", "jupyterhub.singleuser"]


def options_form_html(profiles: list[Profile], gpu_note: str = "") -> str:
    """The spawn form: one radio button per allowed profile (the first one checked)."""
    rows = []
    for i, profile in enumerate(profiles):
        note = f" <em>{html.escape(gpu_note)}</em>" if profile.gpu and gpu_note else ""
        rows.append(
            f'<div class="radio"><label><input type="radio" name="profile" value="{html.escape(profile.slug)}"'
            f'{" checked" if i == 0 else ""}> <strong>{html.escape(profile.display_name)}</strong> '
            f"&mdash; {html.escape(profile.description)}{note}</label></div>"
        )
    return "\n".join(rows)


def kubespawner_profile_list(profiles: Iterable[Profile] = PROFILES, *, python: str = "python",
                             dashboards_dir: Path = Path("/opt/medimg") / DASHBOARDS,
                             environment: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The same profiles as a KubeSpawner ``profile_list`` (Zero-to-JupyterHub).

    Each entry overrides the command (JupyterLab or the Voila-only app), the environment and,
    for GPU profiles, requests one ``nvidia.com/gpu`` (Kubernetes' device plugin then sets
    ``CUDA_VISIBLE_DEVICES``; there is no pool to manage). Filter per user with
    :func:`profiles_for_groups` in a callable ``profile_list``; the groups are listed under
    ``"groups"`` for that purpose.
    """
    rendered = []
    for i, profile in enumerate(profiles):
        override: dict[str, Any] = {
            "cmd": server_command(profile, python, dashboards_dir),
            "environment": {**(environment or {}), "MEDIMG_PROFILE": profile.slug},
        }
        if profile.kind == "lab":
            override["default_url"] = "/lab"
        if profile.gpu:
            override["extra_resource_limits"] = {"nvidia.com/gpu": "1"}
            override["extra_resource_guarantees"] = {"nvidia.com/gpu": "1"}
        rendered.append({"display_name": profile.display_name, "slug": profile.slug,
                         "description": profile.description, "default": i == 0,
                         "groups": list(profile.groups), "kubespawner_override": override})
    return rendered
