"""Spawners that enforce the per-role profiles for every spawn, and run servers as OS accounts.

:class:`ProfileSpawnerMixin` renders the spawn form from the profiles the user's groups allow,
and re-checks the request in ``apply_user_options``, which JupyterHub runs for form *and* REST
spawns. A refused request also clears the saved options (JupyterHub reuses them for the next
spawn otherwise, DESIGN.md §6). GPU profiles take one device from a shared :class:`GpuPool`
and give it back when the server stops.

:class:`SystemUserSpawner` (spawner "system-users") runs each server as the OS account
``<prefix><name>``; :class:`SharedSpawner` (spawner "shared") runs every server as the hub's own
account, for development and tests only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from pathlib import Path
from typing import Any

from jupyterhub.spawner import LocalProcessSpawner, SimpleLocalProcessSpawner, set_user_setuid
from tornado import web
from traitlets import Instance, Unicode, default
from traitlets.config import Configurable

from medimg_hub.hubconf.gpu import GpuPool, GpuPoolExhaustedError
from medimg_hub.hubconf.profiles import (PROFILES, Profile, ProfileNotAllowedError, choose_profile, options_form_html,
                                         profiles_for_groups, server_command)
from medimg_hub.hubconf.users import ensure_os_user, os_username

log = logging.getLogger(__name__)


def _render_form(spawner: ProfileSpawnerMixin) -> str:
    """``Spawner.options_form`` callable: the profiles allowed for this user."""
    allowed = profiles_for_groups(spawner.user_groups(), gpus=spawner.gpus_present())
    if not allowed:
        return ("<p>No server profile is granted to your groups. Ask an administrator to add you to "
                "a role group (engineers, residents, attendings, directors).</p>")
    if len(allowed) == 1:
        return ""  # nothing to choose: the hub starts the one profile without a form
    return options_form_html(allowed, gpu_note=spawner.gpu_note())


def _options_from_form(form_data: dict[str, list[str]]) -> dict[str, Any]:
    """``Spawner.options_from_form``: the chosen profile's slug."""
    return {"profile": (form_data.get("profile") or [""])[0]}


async def _apply_user_options(spawner: ProfileSpawnerMixin, user_options: dict[str, Any]) -> None:
    """``Spawner.apply_user_options``: enforce and apply the profile (form and REST spawns)."""
    spawner.apply_profile(user_options)


class ProfileSpawnerMixin(Configurable):
    """Profile enforcement and GPU allocation for a JupyterHub spawner (mix in first)."""

    gpu_pool = Instance(GpuPool, allow_none=True, help="The machine's GPU pool, shared by all spawners.").tag(config=True)
    user_python = Unicode(help="Python interpreter of users' servers; empty = the hub's.").tag(config=True)
    dashboards_dir = Unicode(help="Folder of the Voila dashboards (absolute).").tag(config=True)
    mlflow_tracking_uri = Unicode(
        "", help="MLflow behind the hub (e.g. http://hub:8000/services/mlflow), given to JupyterLab servers' "
                 "kernels as MLFLOW_TRACKING_URI with the server's token as MLFLOW_TRACKING_TOKEN; empty = none.",
    ).tag(config=True)
    gpu_device = Unicode("", help="The CUDA device id this server holds ('' = none).")
    profile_slug = Unicode("", help="The profile this server was started with.")

    @default("options_form")
    def _default_options_form(self) -> Any:
        return _render_form

    @default("options_from_form")
    def _default_options_from_form(self) -> Any:
        return _options_from_form

    @default("apply_user_options")
    def _default_apply_user_options(self) -> Any:
        return _apply_user_options

    # -- helpers -------------------------------------------------------------------------------

    def user_groups(self) -> list[str]:
        """The owner's hub group names."""
        return [group.name for group in self.user.groups]

    def gpus_present(self) -> bool:
        """Whether this machine lends GPUs (a pool with devices): GPU profiles are offered only then."""
        return self.gpu_pool is not None and bool(self.gpu_pool.devices)

    def gpu_note(self) -> str:
        """A line for the form about the GPU pool's state."""
        pool = self.gpu_pool
        if pool is None or not pool.devices:
            return "(no GPU is configured on this machine: this profile runs on the CPU)"
        free = len(pool.devices) - len(pool.in_use())
        return f"({free} of {len(pool.devices)} GPU(s) free)"

    @property
    def _gpu_owner(self) -> str:
        return f"{self.user.name}/{self.name}" if self.name else self.user.name

    def _forget_options(self) -> None:
        """Clear options saved from a refused request, so the next spawn does not reuse them."""
        self.user_options = {}
        if self.orm_spawner is not None:
            self.orm_spawner.user_options = {}
            if self.db is not None:
                self.db.commit()

    def _refuse(self, status: int, message: str) -> web.HTTPError:
        self._forget_options()
        self.log.warning("refused spawn for %s: %s", self._log_name, message)
        return web.HTTPError(status, message, reason=message[:120])

    # -- applying a profile --------------------------------------------------------------------

    def apply_profile(self, user_options: dict[str, Any]) -> Profile:
        """Check ``user_options["profile"]`` against the user's groups and configure this spawn.

        Raises
        ------
        tornado.web.HTTPError
            403 if the profile is unknown or not allowed, 503 if the GPU pool is exhausted.
        """
        requested = user_options.get("profile") if isinstance(user_options, dict) else None
        try:
            profile = choose_profile(requested, self.user_groups(), self.user.name, PROFILES,
                                     gpus=self.gpus_present())
        except ProfileNotAllowedError as exc:
            raise self._refuse(403, str(exc)) from None
        env = dict(self.environment)
        env["MEDIMG_PROFILE"] = profile.slug
        env["CUDA_VISIBLE_DEVICES"] = ""
        if profile.gpu:
            env["CUDA_VISIBLE_DEVICES"] = self._allocate_gpu()
        self.environment = env
        python = self.user_python or self._default_python()
        self.cmd = server_command(profile, python, Path(self.dashboards_dir))
        self.default_url = "/lab" if profile.kind == "lab" else ""
        self.args = self.lab_args() if profile.kind == "lab" else []
        self.profile_slug = profile.slug
        self.log.info("%s starts profile %s%s", self._log_name, profile.slug,
                      f" on GPU {self.gpu_device}" if self.gpu_device else "")
        return profile

    def _allocate_gpu(self) -> str:
        pool = self.gpu_pool
        if pool is None or not pool.devices:
            self.log.info("no GPU configured; %s runs the GPU profile on the CPU", self._log_name)
            return ""
        try:
            self.gpu_device = pool.allocate(self._gpu_owner)
        except GpuPoolExhaustedError as exc:
            raise self._refuse(503, str(exc)) from None
        return self.gpu_device

    def _release_gpu(self) -> None:
        if self.gpu_pool is not None:
            self.gpu_pool.release(self._gpu_owner)
        self.gpu_device = ""

    def get_env(self) -> dict[str, str]:
        """The server's environment; JupyterLab servers also get MLflow's URL and their token for it.

        The token is the server's own (``JUPYTERHUB_API_TOKEN``): the MLflow client sends it as a
        Bearer token, and it reaches MLflow only if its owner may (role ``mlflow-user``).
        """
        env: dict[str, str] = super().get_env()  # type: ignore[misc]
        profile = next((p for p in PROFILES if p.slug == self.profile_slug), None)
        if self.mlflow_tracking_uri and profile is not None and profile.kind == "lab":
            env["MLFLOW_TRACKING_URI"] = self.mlflow_tracking_uri
            env["MLFLOW_TRACKING_TOKEN"] = env.get("JUPYTERHUB_API_TOKEN", "")
        return env

    @staticmethod
    def _default_python() -> str:
        import sys
        return sys.executable

    def lab_args(self) -> list[str]:
        """Extra command-line arguments of a JupyterLab server."""
        return []

    # -- state: the GPU survives hub restarts, and is released with the server -----------------

    def get_state(self) -> dict[str, Any]:
        state = super().get_state()  # type: ignore[misc]
        if self.gpu_device:
            state["gpu_device"] = self.gpu_device
        return state

    def load_state(self, state: dict[str, Any]) -> None:
        super().load_state(state)  # type: ignore[misc]
        device = state.get("gpu_device", "")
        if device and self.gpu_pool is not None:
            self.gpu_pool.claim(self._gpu_owner, device)
            self.gpu_device = device

    def clear_state(self) -> None:
        super().clear_state()  # type: ignore[misc]
        self._release_gpu()

    async def stop(self, now: bool = False) -> None:
        try:
            await super().stop(now=now)  # type: ignore[misc]
        finally:
            self._release_gpu()


class SystemUserSpawner(ProfileSpawnerMixin, LocalProcessSpawner):
    """Each server runs as the OS account ``<os_user_prefix><hub name>`` (created on first spawn)."""

    homes_dir = Unicode("/home", help="Where OS accounts' homes are created (mode 0700 each).").tag(config=True)
    os_user_prefix = Unicode("medimg-", help="Prefix of the OS account names.").tag(config=True)

    @property
    def os_name(self) -> str:
        return os_username(self.user.name, self.os_user_prefix)

    def make_preexec_fn(self, name: str) -> Any:
        return set_user_setuid(self.os_name)

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        account = pwd.getpwnam(self.os_name)
        env.update(USER=self.os_name, LOGNAME=self.os_name, HOME=account.pw_dir, SHELL=account.pw_shell)
        return env

    async def start(self) -> Any:
        await asyncio.to_thread(ensure_os_user, self.os_name, Path(self.homes_dir))
        return await super().start()


class SharedSpawner(ProfileSpawnerMixin, SimpleLocalProcessSpawner):
    """Every server runs as the hub's own OS account: development and tests only (no isolation)."""

    homes_dir = Unicode("/tmp", help="Parent of the per-user working folders.").tag(config=True)

    @default("home_dir_template")
    def _default_home_dir_template(self) -> str:
        return os.path.join(self.homes_dir, "{username}")

    def lab_args(self) -> list[str]:
        return ["--ServerApp.allow_root=True"] if os.geteuid() == 0 else []

    async def start(self) -> Any:
        self.log.warning(
            "spawner 'shared': %s runs as the hub's OS account (uid %d) and can read everything the hub "
            "can (PACS storage, databases, secrets). Development and tests only; set [hub] spawner = "
            "'system-users' for real users.", self._log_name, os.geteuid())
        return await super().start()
