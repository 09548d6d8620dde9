"""The medimg command line, run as a real process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from medimg_hub.servers.process import free_port

SUBCOMMANDS = ["up", "down", "status", "config", "pipelines", "tasks", "worker", "dispatcher", "migrate", "fl"]
#: PACS, broker, MLflow, dispatcher, one worker, the hub.
SERVICES = 6


def _medimg(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "medimg_hub.cli.main", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


NESTED = [("tasks", "submit"), ("tasks", "list"), ("tasks", "show"), ("tasks", "cancel"), ("tasks", "decide"),
          ("pipelines", "list"), ("fl", "up"), ("fl", "run"), ("fl", "down"), ("datasets", "create"),
          ("datasets", "grant"), ("datasets", "rule", "add"), ("datasets", "rename"), ("pipelines", "new")]


@pytest.mark.parametrize("sub", [None, *SUBCOMMANDS, *NESTED])
def test_every_subcommand_has_help(sub):
    words = [] if sub is None else ([sub] if isinstance(sub, str) else list(sub))
    result = _medimg(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


def test_every_service_medimg_up_may_start_has_a_description(tmp_path):
    """``medimg up`` and ``down`` name each service they start or stop: the DICOM receiver and the delivery
    worker too (a service without a description made ``medimg up`` stop after starting it)."""
    from medimg_hub.cli.main import _describe
    from medimg_hub.settings import DatasetSettings, PlatformSettings, ReceiverSettings, Settings
    from medimg_hub.stack import platform_services

    settings = Settings(platform=PlatformSettings(var_dir=tmp_path), datasets=(DatasetSettings("d", webhook="ris"),),
                        receiver=ReceiverSettings(port=free_port(), senders=("CT01@127.0.0.1",)))
    names = [service.name for service in platform_services(settings)]
    assert {"dicom-receiver", "deliveries", "hub"} <= set(names)
    assert all(_describe(name) for name in names)


@pytest.mark.integration
def test_up_status_down_without_demo(tmp_path):
    config = tmp_path / "medimg.toml"
    config.write_text(
        f'[platform]\nvar_dir = "var"\n[pacs]\nhttp_port = {free_port()}\n'
        f'[queue]\nredis_port = {free_port()}\nworker_groups = ["default"]\n'
        f'[hub]\nport = {free_port()}\napi_port = {free_port()}\nproxy_api_port = {free_port()}\n'
        f'platform_api_port = {free_port()}\nspawner = "shared"\n'
        f'[mlflow]\nport = {free_port()}\nbackend_store_uri = "sqlite:///{tmp_path}/mlflow.db"\n'
        f'artifacts_dir = "{tmp_path}/artifacts"\n'
    )
    try:
        up = _medimg("up", "--no-demo", config=config)
        assert up.returncode == 0, up.stderr
        for what in ("PACS (Orthanc + DICOMweb) started", "Redis) started", "model registry started",
                     "dispatcher + reconciler started", "Worker for group 'default' started", "JupyterHub (log in here"):
            assert what in up.stdout, up.stdout
        again = _medimg("up", "--no-demo", config=config)
        assert again.stdout.count("already running") == SERVICES, again.stdout
        status = _medimg("status", config=config)
        assert status.stdout.count("running (pid") == SERVICES, status.stdout
    finally:
        down = _medimg("down", config=config)
    assert down.stdout.count(" stopped") == SERVICES, down.stdout
    assert "running (pid" not in _medimg("status", config=config).stdout


def test_bad_settings_give_one_clear_line(tmp_path):
    config = tmp_path / "medimg.toml"
    config.write_text("[pacs]\nhttp_prot = 1\n")
    result = _medimg("status", config=config)
    assert result.returncode == 1
    assert result.stderr.strip().startswith("error: unknown key(s) ['http_prot'] in [pacs]")
    assert "Traceback" not in result.stderr


def test_datasets_administered_from_the_command_line(tmp_path):
    """Before the hub ever ran and after: every change or its refusal in one line, nothing half-done."""
    config = tmp_path / "medimg.toml"
    config.write_text('[platform]\nvar_dir = "var"\n')
    created = _medimg("datasets", "create", "lesions", "--description", "Liver lesions", config=config)
    assert created.returncode == 0 and "dataset lesions created" in created.stdout, created.stderr
    assert _medimg("datasets", "create", "lesions", config=config).stderr.strip() == \
        "error: a dataset named 'lesions' exists already"
    early = _medimg("datasets", "grant", "lesions", "oncology", "read", config=config)
    assert early.returncode == 1 and "the hub has not run yet" in early.stderr
    from jupyterhub import orm

    from medimg_hub.hubconf.state import HubState
    from medimg_hub.settings import load_settings

    session = orm.new_session_factory(HubState.for_settings(load_settings(str(config))).db_url)()
    session.add(orm.Group(name="oncology"))
    session.commit()
    session.close()
    assert _medimg("datasets", "grant", "lesions", "oncology", "read", config=config).returncode == 0
    typo = _medimg("datasets", "grant", "lesions", "oncolgy", "read", config=config)
    assert typo.returncode == 1 and "no group named 'oncolgy'" in typo.stderr and "Traceback" not in typo.stderr
    assert _medimg("datasets", "rename", "lesions", "liver-lesions", config=config).returncode == 0
    listed = _medimg("datasets", "list", config=config).stdout
    assert "liver-lesions" in listed and "read: oncology" in listed and "\nlesions " not in listed
    assert "site-a" in listed  # the settings' demo datasets were seeded
