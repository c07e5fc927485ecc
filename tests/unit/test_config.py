"""The settings object and `dicom-gw check-config`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicom_gw.config import ConfigInvalid, load_settings


def test_defaults_without_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("DICOM_GW_CONFIG", raising=False)
    monkeypatch.setattr("dicom_gw.config.DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    settings = load_settings(None)
    assert settings.dicom.port == 11112
    assert settings.storage.root == Path("/var/lib/dicom-gw/storage")
    assert settings.dicom.allow_any_caller is False  # default deny
    with pytest.raises(ConfigInvalid):
        load_settings(tmp_path / "explicit-but-missing.toml")


def test_environment_overrides_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[dicom]\nport = 4242\nae_title = "FROM_FILE"\n')
    monkeypatch.setenv("DICOM_GW_DICOM__PORT", "104")
    settings = load_settings(config)
    assert settings.dicom.port == 104
    assert settings.dicom.ae_title == "FROM_FILE"


def test_every_error_is_reported_with_its_key(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[dicom]\nport = 70000\nae_title = "WAY_TOO_LONG_AE_TITLE"\n'
        '[[dicom.allowed_callers]]\nae_title = "CT1"\nnetworks = ["not-a-network"]\n'
        '[storage]\nroot = "relative/path"\nmystery = 1\n'
        "[dicom.tls]\nenabled = true\n"
    )
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(config)
    keys = {error.key for error in caught.value.errors}
    assert {
        "dicom.port",
        "dicom.ae_title",
        "dicom.allowed_callers.0.networks",
        "storage.root",
        "storage.mystery",
        "dicom.tls",
    } <= keys


def test_check_config_command_prints_errors_and_fails(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text('[dicom]\nport = 0\n[ingest]\nworkers = "many"\n')
    result = subprocess.run(
        [sys.executable, "-m", "dicom_gw", "--config", str(config), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "dicom.port" in result.stderr
    assert "ingest.workers" in result.stderr


def test_check_config_accepts_the_documented_example() -> None:
    example = Path(__file__).parents[2] / "docs" / "examples" / "gateway.toml"
    result = subprocess.run(
        [sys.executable, "-m", "dicom_gw", "--config", str(example), "check-config"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text("[dicom\nport = 1\n")
    with pytest.raises(ConfigInvalid) as caught:
        load_settings(config)
    assert "not valid TOML" in str(caught.value.errors[0])
