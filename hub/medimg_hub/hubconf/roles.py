"""Hub groups that stand for roles, and the JupyterHub RBAC roles given to them.

The role groups are the platform's vocabulary for *who does what* (DESIGN.md §1); dataset
grants (``[[datasets]]`` in the settings) use other groups such as ``site-a``. Every name lives
here so that profiles, the gateway and the tests agree.
"""

from __future__ import annotations

from typing import Any

ENGINEERS = "engineers"
RESIDENTS = "residents"
ATTENDINGS = "attendings"
DIRECTORS = "directors"
ADMINS = "admins"

#: Every role group, in the order profiles are offered.
ROLE_GROUPS: tuple[str, ...] = (ENGINEERS, RESIDENTS, ATTENDINGS, DIRECTORS, ADMINS)
#: Clinicians review AI results in Voila dashboards.
CLINICIAN_GROUPS: tuple[str, ...] = (RESIDENTS, ATTENDINGS)

PLATFORM_SERVICE = "platform"
#: The scope that lets a token reach the platform API (gateway + tasks API).
PLATFORM_ACCESS = f"access:services!service={PLATFORM_SERVICE}"

MLFLOW_SERVICE = "mlflow"
#: The scope that lets a browser session or token reach MLflow through the hub (/services/mlflow).
MLFLOW_ACCESS = f"access:services!service={MLFLOW_SERVICE}"
#: Who may use MLflow (read and write): engineers track runs, directors look at them, admins
#: manage the registry. Clinicians are refused; the MLflow proxy checks these groups again.
MLFLOW_GROUPS: tuple[str, ...] = (ENGINEERS, DIRECTORS, ADMINS)
#: Groups whose members (besides hub admins) may move the model alias clinical pipelines load
#: (``[mlflow] model_alias``): promoting a model is an approval, audited (medimg_hub.tracking.proxy).
ALIAS_APPROVERS: tuple[str, ...] = (DIRECTORS, ADMINS)
#: What a service needs to tell who is calling: names and groups of users.
IDENTITY_SCOPES: tuple[str, ...] = ("read:users:name", "read:users:groups", "read:groups:name")

#: What every hub user may do: start, stop and use their own server, read their own model.
#: (Replaces JupyterHub's default ``user`` role, ``self``, which also lets users create tokens.)
USER_SCOPES: tuple[str, ...] = (
    "servers!user",
    "access:servers!user",
    "read:users!user",
    "users:activity!user",
)


#: The idle culler (jupyterhub-idle-culler as a hub service): stops servers idle too long.
IDLE_CULLER_SERVICE = "idle-culler"
#: What the culler needs: see users' servers and their activity, stop them.
IDLE_CULLER_SCOPES: tuple[str, ...] = ("list:users", "read:users:activity", "read:servers", "delete:servers")


def hub_roles(*, platform_service: bool, mlflow_service: bool = False,
              idle_culler: bool = False) -> list[dict[str, Any]]:
    """``c.JupyterHub.load_roles`` for the platform.

    Parameters
    ----------
    platform_service
        Whether the ``platform`` service is configured; its scopes are only granted then
        (JupyterHub refuses roles naming an unknown service).
    mlflow_service
        Whether the ``mlflow`` service (:mod:`medimg_hub.tracking.proxy`) is configured; the same
        rule applies to its scopes.
    idle_culler
        Whether the ``idle-culler`` service is configured (``[hub] idle_timeout_s`` > 0).

    Returns
    -------
    list of dict
        Role definitions: the default ``user`` role narrowed to the user's own server, one role
        per role group, the server token's role, and the services' roles.
    """
    platform = [PLATFORM_ACCESS] if platform_service else []
    mlflow = [MLFLOW_ACCESS] if mlflow_service else []
    roles: list[dict[str, Any]] = [
        {"name": "user", "description": "Every user: their own server only.", "scopes": list(USER_SCOPES)},
        {"name": "engineer", "description": "Engineers: the platform API and API tokens for scripts.",
         "scopes": ["tokens!user"], "groups": [ENGINEERS]},
        {"name": "admin", "groups": [ADMINS]},  # JupyterHub's built-in admin role (scopes fixed)
        # The token a user's server (and kernel) holds: JupyterHub's defaults plus the platform
        # API and MLflow. A token never gets more than its owner has, so clinicians' dashboards
        # reach the platform only through the role below, and MLflow not at all.
        {"name": "server", "description": "The API token of a user's server.",
         "scopes": ["users:activity!user", "access:servers!server", *platform, *mlflow]},
    ]
    if platform_service:
        roles += [
            {"name": "platform-user", "description": "Reach the platform API (worklists, dashboards, DICOMweb).",
             "scopes": platform, "groups": [ENGINEERS, RESIDENTS, ATTENDINGS, DIRECTORS]},
            {"name": "platform-service", "description": "The platform API: who is asking, and their groups.",
             "scopes": list(IDENTITY_SCOPES), "services": [PLATFORM_SERVICE]},
        ]
    if mlflow_service:
        roles += [
            {"name": "mlflow-user", "description": "Use MLflow (UI and API) through the hub.",
             "scopes": mlflow, "groups": list(MLFLOW_GROUPS)},
            {"name": "mlflow-service", "description": "The MLflow proxy: who is asking, and their groups.",
             "scopes": list(IDENTITY_SCOPES), "services": [MLFLOW_SERVICE]},
        ]
    if idle_culler:
        roles.append({"name": "idle-culler", "description": "Stop servers idle longer than [hub] idle_timeout_s.",
                      "scopes": list(IDLE_CULLER_SCOPES), "services": [IDLE_CULLER_SERVICE]})
    return roles
