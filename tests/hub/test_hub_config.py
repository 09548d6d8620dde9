"""The hub's configuration without a running hub: authenticators, roles, profiles, GPU pool, KubeSpawner.

The config file is loaded the way JupyterHub loads it (``PyFileConfigLoader``) with settings built in
code; authenticators are instantiated from that config (no network needed).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader
from traitlets.utils.importstring import import_item

from medimg_hub.hubconf import GpuPool, GpuPoolExhaustedError, ProfileNotAllowedError, choose_profile, hub_roles, \
    kubespawner_profile_list, profiles_for_groups
from medimg_hub.hubconf.roles import PLATFORM_ACCESS
from medimg_hub.settings import REPO_ROOT, HubSettings, PlatformSettings, Settings, dump_settings

CONFIG = REPO_ROOT / "hub" / "jupyterhub_config.py"


def load_hub_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **hub: object) -> Config:
    settings = dataclasses.replace(Settings(), platform=PlatformSettings(var_dir=tmp_path / "var"),
                                   hub=dataclasses.replace(HubSettings(), homes_dir=tmp_path / "homes", **hub))
    monkeypatch.setenv("MEDIMG_CONFIG", str(dump_settings(settings, tmp_path / "settings.toml")))
    return PyFileConfigLoader(CONFIG.name, path=str(CONFIG.parent)).load_config()


def build_authenticator(cfg: Config) -> object:
    cls = import_item(cfg.JupyterHub.authenticator_class)
    if "Native" in cls.__name__:
        return cls(config=cfg, add_new_table=False)  # its table lives in the hub database
    return cls(config=cfg)


def test_local_authenticator_is_native_with_lockout_and_approval(tmp_path, monkeypatch):
    cfg = load_hub_config(tmp_path, monkeypatch, lockout_attempts=4, lockout_s=120.0)
    auth = build_authenticator(cfg)
    assert type(auth).__name__ == "MedimgNativeAuthenticator"
    assert (auth.allowed_failed_logins, auth.seconds_before_next_try) == (4, 120)
    assert auth.enable_signup is False and auth.open_signup is False
    assert auth.admin_users == {"admin"}
    assert cfg.JupyterHub.ip == "127.0.0.1" and cfg.JupyterHub.hub_ip == "127.0.0.1"
    assert cfg.JupyterHub.db_url.startswith(f"sqlite:///{tmp_path / 'var' / 'hub'}")
    secret = Path(cfg.JupyterHub.cookie_secret_file)
    assert secret.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "var").stat().st_mode & 0o777 == 0o700  # system-users: state closed to kernels


def test_oidc_maps_the_groups_claim_to_hub_groups(tmp_path, monkeypatch):
    secret = tmp_path / "oidc-secret"
    secret.write_text("s3cret\n")
    cfg = load_hub_config(tmp_path, monkeypatch, authenticator="oidc", oidc_client_id="medimg",
                          oidc_authorize_url="https://idp.example/auth", oidc_token_url="https://idp.example/token",
                          oidc_userdata_url="https://idp.example/userinfo", oidc_client_secret_file=str(secret),
                          oidc_groups_claim="roles")
    auth = build_authenticator(cfg)
    assert type(auth).__name__ == "GenericOAuthenticator"
    assert auth.manage_groups is True
    assert auth.auth_state_groups_key == "oauth_user.roles"
    assert (auth.client_id, auth.client_secret) == ("medimg", "s3cret")
    assert auth.token_url == "https://idp.example/token"
    assert "load_groups" not in cfg.JupyterHub  # groups come from the identity provider


def test_oidc_without_endpoints_is_refused(tmp_path, monkeypatch):
    with pytest.raises(Exception, match="oidc_authorize_url"):
        load_hub_config(tmp_path, monkeypatch, authenticator="oidc")


def test_ldap_maps_directory_groups(tmp_path, monkeypatch):
    cfg = load_hub_config(tmp_path, monkeypatch, authenticator="ldap", ldap_server="ldap.example",
                          ldap_bind_dn_templates=("uid={username},ou=people,dc=example",),
                          ldap_group_map=("cn=radiology,ou=groups,dc=example=attendings",))
    auth = build_authenticator(cfg)
    assert type(auth).__name__ == "GroupMappingLDAPAuthenticator"
    assert auth.server_address == "ldap.example" and auth.server_port == 636
    assert auth.bind_dn_template == ["uid={username},ou=people,dc=example"]
    assert auth.group_map == {"cn=radiology,ou=groups,dc=example": "attendings"}
    assert auth.allowed_groups == ["cn=radiology,ou=groups,dc=example"]


def test_roles_grant_platform_access_only_with_the_service():
    without = {r["name"]: r for r in hub_roles(platform_service=False)}
    assert all(PLATFORM_ACCESS not in r.get("scopes", []) for r in without.values())
    assert "tokens!user" not in without["user"]["scopes"]
    with_service = {r["name"]: r for r in hub_roles(platform_service=True)}
    assert PLATFORM_ACCESS in with_service["server"]["scopes"]
    assert with_service["platform-service"]["services"] == ["platform"]
    assert with_service["admin"] == {"name": "admin", "groups": ["admins"]}


def test_mlflow_is_for_engineers_directors_and_admins_only():
    from medimg_hub.hubconf.roles import MLFLOW_ACCESS

    assert all(MLFLOW_ACCESS not in r.get("scopes", []) for r in hub_roles(platform_service=True))
    roles = {r["name"]: r for r in hub_roles(platform_service=True, mlflow_service=True)}
    granted = {g for r in roles.values() if MLFLOW_ACCESS in r.get("scopes", []) for g in r.get("groups", [])}
    assert granted == {"engineers", "directors", "admins"}
    assert MLFLOW_ACCESS in roles["server"]["scopes"]  # kernels: only as far as their owner may
    assert roles["mlflow-service"]["services"] == ["mlflow"]


def test_profiles_follow_groups():
    assert [p.slug for p in profiles_for_groups(["engineers", "site-a"])] == ["engineer-gpu", "engineer-cpu"]
    # a machine that lends no GPU offers no GPU profile, and refuses it by name
    assert [p.slug for p in profiles_for_groups(["engineers"], gpus=False)] == ["engineer-cpu"]
    assert choose_profile(None, ["engineers"], "engineer1", gpus=False).slug == "engineer-cpu"
    with pytest.raises(ProfileNotAllowedError, match="needs a GPU and this machine lends none"):
        choose_profile("engineer-gpu", ["engineers"], "engineer1", gpus=False)
    assert [p.slug for p in profiles_for_groups(["residents"])] == ["clinician"]
    assert choose_profile(None, ["directors"], "d").slug == "director"
    with pytest.raises(ProfileNotAllowedError, match="not allowed for your groups"):
        choose_profile("engineer-gpu", ["residents", "site-a"], "resident-a")
    with pytest.raises(ProfileNotAllowedError, match="not a known profile"):
        choose_profile("root-shell", ["engineers"], "engineer1")
    with pytest.raises(ProfileNotAllowedError, match="no server profile"):
        choose_profile(None, ["site-a"], "nobody")


def test_gpu_pool_allocates_one_device_per_server_and_releases():
    pool = GpuPool(("0", "1"))
    assert pool.allocate("a") == "0" and pool.allocate("a") == "0"
    assert pool.allocate("b") == "1"
    with pytest.raises(GpuPoolExhaustedError, match="all 2 GPU"):
        pool.allocate("c")
    assert pool.release("a") == "0"
    assert pool.allocate("c") == "0"
    import copy
    assert copy.deepcopy(pool) is pool  # traitlets deep-copies config; the pool must stay shared


def test_kubespawner_profile_list_renders_and_loads():
    from kubespawner import KubeSpawner

    rendered = kubespawner_profile_list(environment={"MEDIMG_DICOMWEB_URL": "http://hub/services/platform/dicom-web"})
    gpu = next(p for p in rendered if p["slug"] == "engineer-gpu")
    assert gpu["kubespawner_override"]["extra_resource_limits"] == {"nvidia.com/gpu": "1"}
    clinician = next(p for p in rendered if p["slug"] == "clinician")
    assert clinician["kubespawner_override"]["cmd"][-2:] == ["medimg_voila.app",
                                                           "/opt/medimg/dashboards/worklist.ipynb"]
    assert "extra_resource_limits" not in clinician["kubespawner_override"]
    # KubeSpawner cannot be instantiated without a cluster's config: validate against its traits.
    from traitlets import HasTraits

    traits = KubeSpawner.class_traits()
    holder = HasTraits()  # a bare owner object for trait validation
    assert traits["profile_list"].validate(holder, rendered) == rendered
    for profile in rendered:
        for key, value in profile["kubespawner_override"].items():
            assert key in traits, f"{key} is not a KubeSpawner trait"
            traits[key].validate(holder, value)
    loaded = KubeSpawner._get_initialized_profile_list(None, rendered)
    assert KubeSpawner._get_profile(None, "engineer-gpu", loaded)["slug"] == "engineer-gpu"
    assert KubeSpawner._get_profile(None, None, loaded)["slug"] == "engineer-gpu"  # the default


def test_login_throttle_survives_a_restart(tmp_path):
    from medimg_hub.hubconf.throttle import LoginThrottle

    now = [1000.0]

    def throttle():
        return LoginThrottle(tmp_path / "attempts.sqlite", free_attempts=2, max_delay_s=600, clock=lambda: now[0])

    before = throttle()
    for _ in range(3):
        before.failed("eve", "addr:x")
    before.failed("bob", "addr:x")
    assert before.check("eve", "addr:x") is not None
    after = throttle()  # a restarted hub
    assert after.check("eve", "addr:x") is not None and after.check("bob", "addr:x") is None
    assert oct((tmp_path / "attempts.sqlite").stat().st_mode & 0o777) == "0o600"


def test_gpu_devices_auto_lists_what_nvidia_smi_lists(tmp_path: Path) -> None:
    """``gpu_devices = ["auto"]``: the pool holds the GPUs nvidia-smi lists, none without it or when it fails."""
    from medimg_hub.hubconf.gpu import detect_gpus, pool_devices

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --query-gpu=index ] && printf '0\\n1\\n'\n")
    fake.chmod(0o755)
    assert detect_gpus(str(fake)) == ("0", "1")
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed: no driver' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert detect_gpus(str(broken)) == ()
    assert detect_gpus(str(tmp_path / "absent")) == ()
    assert pool_devices(["2", "3"]) == ("2", "3") and pool_devices([]) == ()
    assert HubSettings().gpu_devices == ("auto",)
