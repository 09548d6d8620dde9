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
          ("pipelines", "list"), ("fl", "up"), ("fl", "run"), ("fl", "down")]


@pytest.mark.parametrize("sub", [None, *SUBCOMMANDS, *NESTED])
def test_every_subcommand_has_help(sub):
    words = [] if sub is None else ([sub] if isinstance(sub, str) else list(sub))
    result = _medimg(*words, "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage:" in result.stdout


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
