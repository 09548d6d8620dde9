"""The operator settings file: defaults, validation, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from medimg_hub.settings import Settings, load_settings
from medimg_kernel.errors import ConfigurationError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_file_equals_the_documented_defaults():
    assert load_settings(REPO / "medimg.toml").as_dict() == Settings().as_dict()


def test_values_and_relative_paths(tmp_path):
    (tmp_path / "s.toml").write_text('[platform]\nvar_dir = "state"\nstart_timeout_s = 5\n[pacs]\nhttp_port = 9999\n')
    settings = load_settings(tmp_path / "s.toml")
    assert settings.pacs.http_port == 9999
    assert settings.platform.start_timeout_s == 5.0
    assert settings.var_dir == (tmp_path / "state").resolve()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[pacs]\nhttp_prot = 1\n", r"unknown key\(s\) \['http_prot'\] in \[pacs\]"),
        ("[pacs]\nhttp_port = 'x'\n", r"\[pacs\] http_port must be of type int"),
        ("[pacs]\nhttp_port = 70000\n", "not a valid TCP port"),
        ("[pacs]\naet = 'A-VERY-LONG-AE-TITLE'\n", "1-16 characters"),
        ("[paks]\n", r"unknown section\(s\) \['paks'\]"),
        ("[demo]\nn_sites = 0\n", "at least 1"),
        ("[pacs\n", "not valid TOML"),
    ],
)
def test_bad_settings_are_refused_with_the_key_named(tmp_path, text, message):
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigurationError, match=message):
        load_settings(tmp_path / "s.toml")


def test_missing_explicit_file_is_an_error(tmp_path):
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_settings(tmp_path / "nope.toml")


def test_dumped_settings_read_back_identically(tmp_path):
    from medimg_hub.settings import QueueSettings, dump_settings

    settings = Settings(queue=QueueSettings(worker_groups=("a", "b"), warm_kernels=False))
    again = load_settings(dump_settings(settings, tmp_path / "s.toml"))
    assert again.as_dict() == {**settings.as_dict(), "platform": {**settings.as_dict()["platform"], "var_dir": str(settings.var_dir)},
                               "mlflow": {**settings.as_dict()["mlflow"], "artifacts_dir": str(settings.resolve(settings.mlflow.artifacts_dir))},
                               "pipelines": {"root": str(settings.resolve(settings.pipelines.root))}}
    assert again.var_dir == settings.var_dir
