"""Signing and destinations of ``agent build`` (:mod:`agent.tools.build`) in-process: the
delegation chain items, signingCommands failures, key files, and where a token may be written."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import Config, config_from_dict
from agent.core.errors import BuildError
from agent.jws.keys import generate_keys
from agent.jws.tokens import decode_token
from agent.tools.build import (
    build_to_file,
    delegation_chain,
    find_upward,
    load_signing_key,
    prepare_build,
    sign_claims,
)

PRIVATE, PUBLIC = generate_keys("ed25519", "builder")
SIMPLE = "{run: [{id: 'a', change: 'true'}]}\n"


def config(**build: Any) -> Config:
    return config_from_dict({"build": build})


def sign(cfg: Config) -> str:
    return asyncio.run(sign_claims({"iat": 1}, config=cfg))


def test_a_chain_item_that_cannot_be_read_or_is_not_a_jwt_is_a_build_error(
    tmp_path: Path,
) -> None:
    with pytest.raises(BuildError, match=r"build\.delegationChain\[0\]: cannot read"):
        delegation_chain(config(delegationChain=[str(tmp_path / "missing.jwt")]))
    junk = tmp_path / "junk.jwt"
    junk.write_text("not a token")
    with pytest.raises(
        BuildError, match=r"delegationChain\[1\]: expected a delegation JWT of at most 8192 bytes"
    ):
        delegation_chain(config(delegationChain=["eyJa.b.c", str(junk)]))


def test_signing_commands_cannot_carry_a_delegation_chain() -> None:
    cfg = config(
        signingCommands=[{"id": "s", "change": "true", "onChange": ["etcha:jwt"]}],
        delegationChain=["eyJa.b.c"],
    )
    with pytest.raises(BuildError, match=r"got build\.signingCommands"):
        sign(cfg)


def test_signing_commands_that_fail_or_emit_no_jwt_are_build_errors() -> None:
    failing = config(signingCommands=[{"id": "s", "always": True, "change": "exit 3"}])
    with pytest.raises(BuildError, match="error signing jwt: "):
        sign(failing)
    silent = config(signingCommands=[{"id": "s", "always": True, "change": "true"}])
    with pytest.raises(BuildError, match="no token returned from signingCommands"):
        sign(silent)


def test_signing_commands_get_the_payload_and_their_trimmed_jwt_output_is_the_token() -> None:
    cfg = config(
        signingCommands=[
            {
                "id": "s",
                "always": True,
                "change": 'printf "  h.%s.sig\\n" "$ETCHA_PAYLOAD"',
                "onChange": ["etcha:jwt"],
            }
        ]
    )
    assert sign(cfg) == "h.eyJpYXQiOjF9.sig"  # B64U of {"iat":1}


def test_a_key_file_readable_by_others_signs_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "open.key"
    key_file.write_text(PRIVATE + "\n")
    os.chmod(key_file, 0o644)
    with caplog.at_level(logging.WARNING, logger="agent.tools.build"):
        key = load_signing_key(config(signingKeyPath=str(key_file)))
    assert str(key.public()) == PUBLIC
    assert "is readable by group or others (mode 0644); fix: chmod 600" in caplog.text
    assert PRIVATE not in caplog.text


def test_a_key_path_that_is_a_directory_cannot_be_read(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"build\.signingKeyPath: cannot read"):
        load_signing_key(config(signingKeyPath=str(tmp_path)))


def test_find_upward_takes_a_path_with_directories_as_given(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "k").write_text("x")
    assert find_upward(str(tmp_path / "a" / "k"), Path("/")) == tmp_path / "a" / "k"
    assert find_upward(str(tmp_path / "a" / "missing"), tmp_path) is None


def test_a_destination_that_is_a_directory_is_refused_before_building(tmp_path: Path) -> None:
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text(SIMPLE)
    (tmp_path / "out").mkdir()
    with pytest.raises(BuildError, match="it is a directory"):
        prepare_build(pattern, tmp_path / "out", config=config(signingKey=PRIVATE))


def test_build_to_file_names_the_pattern_when_signing_fails_for_another_reason(
    tmp_path: Path,
) -> None:
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text(SIMPLE)
    with pytest.raises(BuildError, match=r"building .*p\.jsonnet: "):
        asyncio.run(build_to_file(pattern, tmp_path / "t.jwt", config=config(signingKey="bad")))
    assert not (tmp_path / "t.jwt").exists()
    asyncio.run(build_to_file(pattern, tmp_path / "t.jwt", config=config(signingKey=PRIVATE)))
    assert decode_token((tmp_path / "t.jwt").read_text()).claims["etchaPattern"]["entrypoint"]
