# JupyterHub configuration of the medimg platform (DESIGN.md §1–§3).
#
# Started by `medimg up` (medimg_hub.servers.jupyterhub.JupyterHubServer) as
#     MEDIMG_CONFIG=<settings file> jupyterhub -f hub/jupyterhub_config.py
# Every value comes from the ONE settings file ([hub] and [platform] in medimg.toml); helpers live
# in medimg_hub.hubconf. Topic blocks, in order: network, state and secrets, authentication,
# roles and groups, profiles and spawner, services, security.
import importlib.util
import logging
import os
import sys
from pathlib import Path

from medimg_hub.hubconf import GpuPool, HubState, hub_roles
from medimg_hub.hubconf.gpu import pool_devices
from medimg_hub.hubconf.auth import authenticator_config
from medimg_hub.hubconf.roles import IDLE_CULLER_SERVICE, MLFLOW_SERVICE, PLATFORM_SERVICE, ROLE_GROUPS
from medimg_hub.hubconf.routes import kernel_environment
from medimg_hub.hubconf.state import proxy_command
from medimg_hub.hubconf.users import secure_state_dir
from medimg_hub.servers.logs import KEY_FILE_ENV, key_file
from medimg_hub.settings import CONFIG_ENV_VAR, MLFLOW_PREFIX, REPO_ROOT, load_settings

c = get_config()  # noqa: F821 - provided by JupyterHub when it loads this file
log = logging.getLogger("medimg_hub.jupyterhub_config")

settings = load_settings(os.environ.get(CONFIG_ENV_VAR) or None)
hub = settings.hub
state = HubState.for_settings(settings)
LOOPBACK = "127.0.0.1"
PUBLIC_URL = f"http://{LOOPBACK}:{hub.port}"

# ---------------------------------------------------------------------------------------------
# Network: the proxy's public port is the one URL people open; everything binds to loopback.
# configurable-http-proxy runs as a subprocess managed by the hub (its pid file under var/hub).
# ---------------------------------------------------------------------------------------------
c.JupyterHub.ip = LOOPBACK
c.JupyterHub.port = hub.port
c.JupyterHub.hub_ip = LOOPBACK
c.JupyterHub.hub_port = hub.api_port
c.ConfigurableHTTPProxy.should_start = True
c.ConfigurableHTTPProxy.api_url = f"http://{LOOPBACK}:{hub.proxy_api_port}"
c.ConfigurableHTTPProxy.command = proxy_command()  # its output passes medimg_hub.servers.logs: no UIDs
# No DICOM UIDs in the hub's log: the hub's own lines and the proxy's output (which names the URLs it
# fails to proxy) pass medimg_hub.servers.logs, which turns UIDs into keyed pseudonyms.
os.environ[KEY_FILE_ENV] = str(key_file(settings.var_dir))
c.JupyterHub.logging_config = {"formatters": {"console": {"()": "medimg_hub.servers.logs.redacting_formatter"}}}
c.ConfigurableHTTPProxy.pid_file = str(state.proxy_pid_file)
# Users' servers are stopped with the hub (`medimg down` leaves nothing running).
c.JupyterHub.cleanup_servers = True
c.JupyterHub.cleanup_proxy = True

# ---------------------------------------------------------------------------------------------
# State and secrets: var/hub/ (0700): the hub database, cookie secret and proxy token (0600).
# ---------------------------------------------------------------------------------------------
c.JupyterHub.db_url = state.db_url
c.JupyterHub.cookie_secret_file = str(state.cookie_secret())
c.ConfigurableHTTPProxy.auth_token = state.secret("proxy_auth_token")
c.JupyterHub.pid_file = str(state.hub_dir / "jupyterhub.pid")

# ---------------------------------------------------------------------------------------------
# Authentication: [hub] authenticator = "local" (NativeAuthenticator: bcrypt hashes in the hub
# database, lockout after lockout_attempts failures for lockout_s, sign-ups approved by an admin),
# "oidc" (GenericOAuthenticator; the IdP's groups claim becomes the hub groups) or "ldap".
# ---------------------------------------------------------------------------------------------
authenticator_class, authenticator_traits = authenticator_config(settings)
c.JupyterHub.authenticator_class = authenticator_class
auth_section = getattr(c, authenticator_class.rsplit(".", 1)[1])
for _trait, _value in authenticator_traits.items():
    setattr(auth_section, _trait, _value)
c.Authenticator.admin_users = set(hub.admin_users)
# The platform's own wording of the hub's pages (hub/templates: home, profile choice, errors), then,
# for the local authenticator, NativeAuthenticator's pages (/hub/signup, /hub/authorize, /hub/change-password).
c.JupyterHub.template_paths = [str(REPO_ROOT / "hub" / "templates")]
if hub.authenticator == "local":
    c.JupyterHub.template_paths.append(
        str(Path(importlib.util.find_spec("nativeauthenticator").origin).parent / "templates"))

# ---------------------------------------------------------------------------------------------
# Roles and groups (medimg_hub.hubconf.roles): role groups engineers, residents, attendings,
# directors, admins; dataset grants use other groups (site-a, ...). Groups from the identity
# provider (oidc, ldap) are managed by the authenticator instead.
# ---------------------------------------------------------------------------------------------
PLATFORM_API = importlib.util.find_spec("medimg_hub.platform_api") is not None
IDLE_CULLER = hub.idle_timeout_s > 0
c.JupyterHub.load_roles = hub_roles(platform_service=PLATFORM_API, mlflow_service=True, idle_culler=IDLE_CULLER)
if hub.authenticator == "local":
    dataset_groups = {g for d in settings.datasets for g in (*d.read, *d.write, *d.review, *d.finalise, *d.export)}
    c.JupyterHub.load_groups = {name: {} for name in sorted({*ROLE_GROUPS, *dataset_groups})}

# ---------------------------------------------------------------------------------------------
# Profiles and spawner (medimg_hub.hubconf.profiles / .spawner): the profiles a user's groups
# allow, enforced for form and REST spawns; engineers get JupyterLab (GPU or CPU), clinicians and
# directors a Voila-only server. "system-users": one OS account per user (the isolation of
# DESIGN.md §3); "shared": one account for all, development and tests only.
# ---------------------------------------------------------------------------------------------
if hub.spawner == "system-users":
    c.JupyterHub.spawner_class = "medimg_hub.hubconf.spawner.SystemUserSpawner"
    secure_state_dir(settings.var_dir, homes_dir=settings.resolve(hub.homes_dir))
    c.SystemUserSpawner.homes_dir = str(settings.resolve(hub.homes_dir))
    c.SystemUserSpawner.os_user_prefix = hub.os_user_prefix
else:
    log.warning("[hub] spawner = 'shared': every user's server runs as this hub's OS account. "
                "Development and tests only.")
    c.JupyterHub.spawner_class = "medimg_hub.hubconf.spawner.SharedSpawner"
    c.SharedSpawner.homes_dir = str(settings.resolve(hub.homes_dir))
c.ProfileSpawnerMixin.gpu_pool = GpuPool(pool_devices(hub.gpu_devices))
# Users' servers (and so their kernels) run .venv-users' Python: Debian's python3.11 over .venv's
# packages *without* the project's editable install, plus the repository root: medimg_kernel and
# medimg_voila are importable there, medimg_hub (hub/) is not. scripts/bootstrap.sh builds it.
USERS_VENV_PYTHON = REPO_ROOT / ".venv-users" / "bin" / "python"
if not hub.user_python and not USERS_VENV_PYTHON.exists():
    raise SystemExit(f"{USERS_VENV_PYTHON} is missing: run scripts/bootstrap.sh (it builds users' environment)")
c.ProfileSpawnerMixin.user_python = hub.user_python or str(USERS_VENV_PYTHON)
c.ProfileSpawnerMixin.dashboards_dir = str(REPO_ROOT / "dashboards")
# Engineers' kernels track runs through the hub with their server's token (MLFLOW_TRACKING_TOKEN).
c.ProfileSpawnerMixin.mlflow_tracking_uri = f"{PUBLIC_URL}{MLFLOW_PREFIX}"
c.Spawner.ip = LOOPBACK
c.Spawner.start_timeout = hub.spawn_timeout_s
c.Spawner.http_timeout = hub.spawn_timeout_s
c.Spawner.disable_user_config = True
c.Spawner.environment = {
    # Kernels reach images only through the platform's gateway, with their server's hub token,
    # on the service's own port (medimg_hub.hubconf.routes: the proxy halves WADO throughput).
    **kernel_environment(settings),
    # the kernel side only (medimg_kernel, the Flower app): never hub/ (the trust boundary)
    "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "federated")]),
}
c.JupyterHub.allow_named_servers = False

# ---------------------------------------------------------------------------------------------
# Services, started and stopped by the hub: the platform API (DICOMweb gateway + tasks API) at
# /services/platform/ when its module is installed, and MLflow behind the hub's login at
# /services/mlflow/ (medimg_hub.tracking.proxy in front of the tracking server `medimg up` starts).
# ---------------------------------------------------------------------------------------------
SERVICE_ENV = {CONFIG_ENV_VAR: str(state.settings_file),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(REPO_ROOT / "hub")])}
c.JupyterHub.services = [{
    "name": MLFLOW_SERVICE,
    "url": f"http://{LOOPBACK}:{hub.mlflow_proxy_port}",
    "command": [sys.executable, "-m", "medimg_hub.tracking.proxy", "--config", str(state.settings_file)],
    "environment": SERVICE_ENV,
    "oauth_no_confirm": True,
}]
if PLATFORM_API:
    c.JupyterHub.services += [{
        "name": PLATFORM_SERVICE,
        "url": f"http://{LOOPBACK}:{hub.platform_api_port}",
        "command": [sys.executable, "-m", "medimg_hub.platform_api", "--config", str(state.settings_file)],
        "environment": SERVICE_ENV,
        "oauth_no_confirm": True,
    }]
else:
    log.warning("medimg_hub.platform_api is not installed: no platform service at /services/%s/",
                PLATFORM_SERVICE)
if IDLE_CULLER:
    # jupyterhub-idle-culler: stops servers idle longer than [hub] idle_timeout_s (their GPU goes back
    # to the pool when the spawner stops), checking every tenth of that (at least 5 s, at most 5 min)
    c.JupyterHub.services += [{
        "name": IDLE_CULLER_SERVICE,
        "command": [sys.executable, "-m", "jupyterhub_idle_culler", f"--timeout={int(hub.idle_timeout_s)}",
                    f"--cull-every={int(min(300, max(5, hub.idle_timeout_s / 10)))}"],
    }]

# ---------------------------------------------------------------------------------------------
# Security: no embedding in other sites' frames, no user-supplied server config, secure cookies
# when served over TLS by a reverse proxy in front (set JUPYTERHUB_COOKIE_SECURE there).
# ---------------------------------------------------------------------------------------------
c.JupyterHub.tornado_settings = {
    "headers": {"Content-Security-Policy": "frame-ancestors 'self'", "X-Content-Type-Options": "nosniff"},
    "cookie_options": {"samesite": "Lax", "secure": os.environ.get("JUPYTERHUB_COOKIE_SECURE") == "1"},
}
c.JupyterHub.authenticate_prometheus = True
c.JupyterHub.reset_db = False
