"""MLflow accounts of hub users, and datasets as the unit of access in MLflow.

MLflow's ``basic-auth`` app (:mod:`mlflow.server.auth`) enforces permissions per experiment on
every route it serves (runs, metrics, artifacts through ``--serve-artifacts``, GraphQL, search
results redacted). This module makes those permissions follow the platform's dataset grants:

* **One MLflow account per hub user**, created by the MLflow proxy on the user's first request,
  non-admin, with a password derived from a hub-side key (:func:`user_password`), so the proxy
  forwards every request as the person who made it and MLflow credits runs to them.
* **Dataset experiments.** An experiment tagged :data:`DATASET_TAG` (a comma-separated list of
  dataset names) is readable only by users who may read *every* one of those datasets: READ for
  them, an explicit DENY for everyone else. Only hub-side processes make such experiments
  (:func:`dataset_experiment`); the proxy refuses ``medimg.*`` tags and reserved names from users.
  A new dataset experiment is denied to every existing account before anything is logged into it
  (:func:`confine_experiment`); the proxy then grants READ to each grantee on their next request.
* **Everything else** uses the server's default permission (READ): engineers read each other's
  experiments and the model registry, and manage what they create. Each account may also write
  to the ``Default`` experiment (id 0), where MLflow's client logs when no experiment is set.

Grants are re-read on every request (the platform's :class:`~medimg_hub.access.datasets.DatasetDirectory`,
a few seconds' cache) and applied before the request is forwarded: a grant or a revocation takes
effect on the user's next request, without a restart. Hub admins read every dataset experiment.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests

from medimg_hub.access.datasets import DatasetDirectory
from medimg_kernel.errors import MedImgError

log = logging.getLogger(__name__)

#: Experiment tag naming the datasets whose data the experiment's runs hold (comma-separated).
DATASET_TAG = "medimg.dataset"
#: Tags only hub-side processes set: the proxy refuses them from users.
RESERVED_TAG_PREFIX = "medimg."
#: Experiment names only hub-side processes use (pipeline jobs' experiments).
RESERVED_EXPERIMENT_PREFIXES: tuple[str, ...] = ("pipeline/",)
#: The experiment MLflow's client logs to when none is set.
DEFAULT_EXPERIMENT_ID = "0"
#: Seconds the list of dataset experiments is reused between requests.
EXPERIMENTS_TTL_S = 2.0
#: Seconds after which a user's permissions are all applied again (repairs a grant that a hub-side
#: :func:`confine_experiment` overwrote while the proxy applied it).
REAPPLY_S = 60.0
#: Seconds for each call to MLflow's admin API.
ADMIN_TIMEOUT_S = 30.0

#: MLflow's REST API (2.0) below the server's root.
REST_API = "api/2.0/mlflow"
_REST3 = "api/3.0/mlflow"


class TrackingAccessError(MedImgError, RuntimeError):
    """MLflow's accounts or permissions could not be set up: the request is refused, not let through."""


def user_password(key: bytes, username: str) -> str:
    """The MLflow password of hub user ``username``: HMAC-SHA256 of the name under the hub-side ``key``."""
    return hmac.new(key, b"mlflow account:" + username.encode(), hashlib.sha256).hexdigest()


def datasets_of(tags: Mapping[str, str]) -> frozenset[str]:
    """The datasets an experiment's :data:`DATASET_TAG` names (empty: not a dataset experiment)."""
    return frozenset(name.strip() for name in tags.get(DATASET_TAG, "").split(",") if name.strip())


def reserved_experiment_name(name: str) -> bool:
    """Whether only hub-side processes may create or rename an experiment to ``name``."""
    return name.strip().startswith(RESERVED_EXPERIMENT_PREFIXES)


class AdminApi:
    """MLflow's REST API as the platform account (the basic-auth app's admin).

    Parameters
    ----------
    url
        The server's root including its static prefix, e.g. ``http://127.0.0.1:5500/services/mlflow``.
    account
        (username, password) of the platform account.
    """

    def __init__(self, url: str, account: tuple[str, str]) -> None:
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = account

    def call(self, method: str, route: str, *, ok: Iterable[str] = (), **kwargs: Any) -> dict[str, Any]:
        """One request; MLflow's error codes in ``ok`` count as success (e.g. RESOURCE_ALREADY_EXISTS)."""
        try:
            response = self.session.request(method, f"{self.url}/{route}", timeout=ADMIN_TIMEOUT_S, **kwargs)
        except requests.RequestException as exc:
            raise TrackingAccessError(f"MLflow did not answer {route}: {type(exc).__name__}") from exc
        body: dict[str, Any] = {}
        try:
            body = response.json()
        except ValueError:
            pass
        if response.status_code == 200 or body.get("error_code") in set(ok):
            return body
        raise TrackingAccessError(f"MLflow refused {route} ({response.status_code} {body.get('error_code', '')}): "
                                  f"{str(body.get('message', response.text))[:200]}")

    def users(self) -> list[tuple[str, bool]]:
        """(username, is_admin) of every account."""
        return [(u["username"], bool(u.get("is_admin"))) for u in self.call("GET", f"{REST_API}/users/list").get("users", [])]

    def create_user(self, username: str, password: str) -> None:
        self.call("POST", f"{REST_API}/users/create", json={"username": username, "password": password},
                  ok={"RESOURCE_ALREADY_EXISTS"})

    def grant(self, username: str, experiment_id: str, permission: str) -> None:
        """Set ``username``'s permission on one experiment, replacing any it had.

        MLflow has no update of a user's grant: an existing one is revoked, then granted anew.
        Meanwhile the server's default (READ) applies, which is no more than either side of the
        changes made here (READ and DENY on dataset experiments, EDIT on ``Default``) exposes.
        """
        grant = {"username": username, "resource_type": "experiment", "resource_id": experiment_id,
                 "permission": permission}
        body = self.call("POST", f"{_REST3}/users/permissions/grant", json=grant, ok={"RESOURCE_ALREADY_EXISTS"})
        if body.get("error_code") == "RESOURCE_ALREADY_EXISTS":
            self.call("POST", f"{_REST3}/users/permissions/revoke", ok={"RESOURCE_DOES_NOT_EXIST"}, json={
                "username": username, "resource_type": "experiment", "resource_id": experiment_id})
            self.call("POST", f"{_REST3}/users/permissions/grant", json=grant)

    def dataset_experiments(self) -> dict[str, frozenset[str]]:
        """Datasets of every experiment tagged :data:`DATASET_TAG`, deleted ones included, by experiment id."""
        found: dict[str, frozenset[str]] = {}
        token: str | None = None
        while True:
            body = self.call("POST", f"{REST_API}/experiments/search", json={
                "max_results": 1000, "view_type": "ALL", "filter": f"tags.`{DATASET_TAG}` LIKE '%'",
                **({"page_token": token} if token else {})})
            for experiment in body.get("experiments", []):
                tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
                found[str(experiment["experiment_id"])] = datasets_of(tags)
            token = body.get("next_page_token")
            if not token:
                return found


def confine_experiment(api: AdminApi, experiment_id: str) -> None:
    """Deny a new dataset experiment to every non-admin account; the proxy grants READ to grantees."""
    for username, is_admin in api.users():
        if not is_admin:
            api.grant(username, experiment_id, "DENY")


def dataset_experiment(api: AdminApi, name: str, datasets: Iterable[str]) -> str:
    """The id of experiment ``name`` holding runs of ``datasets``: created (tagged, then confined) if missing.

    Raises
    ------
    TrackingAccessError
        An experiment of that name exists but is tagged with other datasets (or none): logging
        into it could show one dataset's runs to another's grantees.
    """
    wanted = frozenset(datasets)
    if not wanted:
        raise TrackingAccessError(f"experiment {name!r}: a dataset experiment needs at least one dataset")
    body = api.call("GET", f"{REST_API}/experiments/get-by-name", params={"experiment_name": name},
                    ok={"RESOURCE_DOES_NOT_EXIST"})
    experiment = body.get("experiment")
    if experiment is not None:
        tags = {t["key"]: t["value"] for t in experiment.get("tags", [])}
        if datasets_of(tags) != wanted:
            raise TrackingAccessError(
                f"MLflow experiment {name!r} (id {experiment['experiment_id']}) is tagged {DATASET_TAG}="
                f"{tags.get(DATASET_TAG, '')!r}, not {','.join(sorted(wanted))!r}: it was not made by the platform; "
                "rename or delete it in MLflow")
        return str(experiment["experiment_id"])
    created = api.call("POST", f"{REST_API}/experiments/create", ok={"RESOURCE_ALREADY_EXISTS"}, json={
        "name": name, "tags": [{"key": DATASET_TAG, "value": ",".join(sorted(wanted))}]})
    if "experiment_id" not in created:  # created meanwhile by another worker: check its tags
        return dataset_experiment(api, name, wanted)
    experiment_id = str(created["experiment_id"])
    confine_experiment(api, experiment_id)
    log.info("MLflow experiment %s (id %s) confined to datasets %s", name, experiment_id, sorted(wanted))
    return experiment_id


@dataclass
class _Account:
    """What has been applied in MLflow for one hub user."""

    created: bool = False
    applied_at: float = 0.0
    permissions: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class MlflowAccounts:
    """The MLflow proxy's side: each hub user's account, kept in step with their dataset grants.

    Parameters
    ----------
    api
        MLflow's admin API.
    key
        Secret that derives users' passwords (:func:`user_password`).
    directory
        The platform's datasets and grants.
    """

    def __init__(self, api: AdminApi, key: bytes, directory: DatasetDirectory) -> None:
        self.api = api
        self.key = key
        self.directory = directory
        self._accounts: dict[str, _Account] = {}
        self._lock = threading.Lock()
        self._experiments: tuple[float, dict[str, frozenset[str]]] | None = None

    def _dataset_experiments(self, fresh: bool) -> dict[str, frozenset[str]]:
        cached = self._experiments
        if not fresh and cached is not None and time.monotonic() - cached[0] < EXPERIMENTS_TTL_S:
            return cached[1]
        found = self.api.dataset_experiments()
        self._experiments = (time.monotonic(), found)
        return found

    def readable(self, groups: Iterable[str], admin: bool) -> frozenset[str] | None:
        """Datasets a member of ``groups`` may read (``None``: all, for hub admins)."""
        if admin:
            return None
        return frozenset(name for name, rights in self.directory.rights(groups).items() if "read" in rights)

    def prepare(self, username: str, groups: Iterable[str], admin: bool) -> tuple[str, str]:
        """Make ``username``'s account match their grants now; their MLflow (username, password).

        Blocking (MLflow's admin API): call it from a thread pool.

        Raises
        ------
        TrackingAccessError
            MLflow refused or did not answer: the caller refuses the request.
        """
        with self._lock:
            account = self._accounts.setdefault(username, _Account())
        password = user_password(self.key, username)
        readable = self.readable(groups, admin)
        with account.lock:
            new = not account.created
            if new:
                self.api.create_user(username, password)
                self.api.grant(username, DEFAULT_EXPERIMENT_ID, "EDIT")
            stale = time.monotonic() - account.applied_at > REAPPLY_S
            # a new account is checked against a fresh list: an experiment made just before it
            # existed was confined without it
            for experiment_id, datasets in self._dataset_experiments(fresh=new).items():
                allowed = readable is None or (bool(datasets) and datasets <= readable)
                wanted = "READ" if allowed else "DENY"
                before = account.permissions.get(experiment_id)
                if stale or before != wanted:
                    self.api.grant(username, experiment_id, wanted)
                    account.permissions[experiment_id] = wanted
                    if before is not None and before != wanted:
                        log.info("MLflow: %s now %s on experiment %s", username, wanted, experiment_id)
            if stale:
                account.applied_at = time.monotonic()
            account.created = True
        return username, password




def rename_dataset_experiments(api: AdminApi, old: str, new: str) -> int:
    """After dataset ``old`` was renamed ``new``: its experiments' :data:`DATASET_TAG` and names
    (``pipeline/<pipeline>/<old>``) follow, so grantees of ``new`` read its earlier runs and new
    jobs log next to them. Returns the number of experiments changed."""
    changed = 0
    for experiment_id, datasets in api.dataset_experiments().items():
        if old not in datasets:
            continue
        value = ",".join(sorted((datasets - {old}) | {new}))
        api.call("POST", f"{REST_API}/experiments/set-experiment-tag", json={
            "experiment_id": experiment_id, "key": DATASET_TAG, "value": value})
        name = api.call("GET", f"{REST_API}/experiments/get", params={"experiment_id": experiment_id})["experiment"]["name"]
        if name.startswith(RESERVED_EXPERIMENT_PREFIXES) and name.endswith(f"/{old}"):
            api.call("POST", f"{REST_API}/experiments/update", json={
                "experiment_id": experiment_id, "new_name": name[: -len(old)] + new})
        changed += 1
    return changed


__all__ = ["DATASET_TAG", "RESERVED_TAG_PREFIX", "RESERVED_EXPERIMENT_PREFIXES", "AdminApi", "MlflowAccounts",
           "TrackingAccessError", "confine_experiment", "dataset_experiment", "datasets_of", "rename_dataset_experiments",
           "reserved_experiment_name", "user_password"]
