"""Which keys ``agent publish`` verifies published tokens with (:func:`publishing_keys`), and an
artifact whose pattern cannot be read failing every destination (:class:`Publisher`)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from support import RIGHT_PRIV, RIGHT_PUB

from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError
from agent.net.http import HTTPClient
from agent.tools.publish import Publisher, lines, publishing_keys


def test_the_signing_key_file_gives_the_publishing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    key_file = tmp_path / "signing.key"
    key_file.write_text(RIGHT_PRIV + "\n")
    os.chmod(key_file, 0o600)
    (key,) = publishing_keys(config_from_dict({"build": {"signingKeyPath": "signing.key"}}))
    assert str(key) == RIGHT_PUB


def test_a_signing_key_path_that_cannot_be_read_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"build\.signingKeyPath: cannot read"):
        publishing_keys(config_from_dict({"build": {"signingKeyPath": str(tmp_path)}}))


def test_without_a_signing_key_the_verify_keys_are_used_and_none_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (key,) = publishing_keys(config_from_dict({"run": {"verifyKeys": [RIGHT_PUB]}}))
    assert str(key) == RIGHT_PUB
    with pytest.raises(ConfigError, match=r"expected build\.signingKey, build\.signingKeyPath or"):
        publishing_keys(config_from_dict({"build": {"signingKeyPath": "absent.key"}}))


def test_an_artifact_whose_pattern_cannot_be_read_fails_each_destination(tmp_path: Path) -> None:
    doc = {
        "build": {"signingKey": RIGHT_PRIV},
        "publish": {
            "artifacts": {
                "web": {
                    "pattern": str(tmp_path / "missing.jsonnet"),
                    "dest": [str(tmp_path / "a.jwt"), str(tmp_path / "b.jwt")],
                    "expiresIn": "1h",
                }
            }
        },
    }
    publisher = Publisher(config_from_dict(doc), client=HTTPClient())
    reports = asyncio.run(publisher.check_all())
    assert [(r.action, r.reason, r.result) for r in reports] == [
        ("check", "pattern and key", "failed"),
        ("check", "pattern and key", "failed"),
    ]
    shown = lines(reports)
    assert shown[0].startswith(f"web {tmp_path / 'a.jwt'}: check (pattern and key): failed: ")
    assert not (tmp_path / "a.jwt").exists() and not (tmp_path / "b.jwt").exists()
