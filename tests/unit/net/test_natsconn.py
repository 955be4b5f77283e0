"""NATS connection options and subjects (agent.net.natsconn), without a server."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError
from agent.net.natsconn import (
    NATSSettings,
    connect_options,
    host_token,
    push_subjects,
    source_token_ok,
    status_subject,
    stream_subjects,
)


def test_pattern_pushes_go_where_the_stream_captures_and_the_rest_do_not() -> None:
    (captured,) = stream_subjects("etcha")
    assert captured == "etcha.push.>"
    assert push_subjects("etcha", "web") == "etcha.push.web"
    assert push_subjects("etcha", "web", "h1") == "etcha.push.web.h1"
    assert push_subjects("etcha", "web", "h1", stored=False) == "etcha.direct.web.h1"
    assert not push_subjects("etcha", "web", stored=False).startswith("etcha.push.")


def test_host_names_become_subject_tokens() -> None:
    assert host_token("web-1.example.com") == "web-1.example.com"
    assert host_token("a b*c>") == "a_b_c_"
    assert host_token("..a..b..") == "a.b"


def test_source_names_must_be_one_token() -> None:
    assert source_token_ok("web_1-x")
    assert not source_token_ok("a.b")
    assert not source_token_ok("*")


def test_one_authentication_at_a_time() -> None:
    settings = NATSSettings(servers=("nats://127.0.0.1:4222",), token="t", user="u")
    with pytest.raises(ConfigError, match="expected one authentication"):
        connect_options(settings)


def test_user_password_and_nkey_options() -> None:
    base = ("nats://127.0.0.1:4222",)
    opts = connect_options(NATSSettings(servers=base, user="u", password="p"))
    assert opts["user"] == "u" and opts["password"] == "p"
    assert connect_options(NATSSettings(servers=base, nkey_seed_file="/s.nk"))["nkeys_seed"] == (
        "/s.nk"
    )
    assert connect_options(NATSSettings(servers=base, creds_file="/u.creds"))[
        "user_credentials"
    ] == ("/u.creds")


def test_tls_urls_get_a_verifying_context(tmp_path: Path) -> None:
    opts = connect_options(NATSSettings(servers=("tls://127.0.0.1:4222",)))
    assert isinstance(opts["tls"], ssl.SSLContext)
    assert opts["tls"].verify_mode == ssl.CERT_REQUIRED
    missing = NATSSettings(servers=("nats://x:1",), tls={"caFile": str(tmp_path / "none.pem")})
    with pytest.raises(ConfigError, match=r"nats\.tls: expected readable PEM files"):
        connect_options(missing)


def test_no_servers_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"nats\.servers: expected at least one"):
        connect_options(NATSSettings(servers=()))


def test_the_subject_prefix_comes_from_the_nats_section() -> None:
    nats = {"servers": ["nats://127.0.0.1:4222"], "subjectPrefix": "fleet"}
    settings = NATSSettings.of(config_from_dict({"nats": nats}).nats)
    assert settings.subject_prefix == "fleet"
    assert push_subjects(settings.subject_prefix, "web", "h1") == "fleet.push.web.h1"
    assert stream_subjects(settings.subject_prefix) == ["fleet.push.>"]
    assert status_subject(settings.subject_prefix) == "fleet.status"
    default = NATSSettings.of(config_from_dict({"nats": {"servers": nats["servers"]}}).nats)
    assert default.subject_prefix == "etcha"
