"""The ``nats`` section and ``sources.X.allowNATS``."""

from __future__ import annotations

import pytest

from agent.config.load import config_from_dict
from agent.core.errors import ConfigError


def test_nats_is_off_without_servers_and_has_its_defaults() -> None:
    nats = config_from_dict({}).nats
    assert not nats.enabled
    assert (nats.subject_prefix, nats.stream, nats.hostname) == ("etcha", "ETCHA", "")


def test_nats_section_and_allow_nats_load_and_secrets_are_masked() -> None:
    config = config_from_dict(
        {
            "nats": {"servers": ["nats://127.0.0.1:4222"], "user": "ops", "password": "pw"},
            "sources": {"web": {"allowNATS": True}},
        }
    )
    assert config.nats.enabled and config.sources["web"].allow_nats
    assert config.to_dict()["nats"]["password"] == "pw"
    assert config.masked_dict()["nats"]["password"] == "***"
    assert config_from_dict(config.to_dict()) == config  # loadable again


def test_nats_tls_takes_only_file_keys() -> None:
    with pytest.raises(ConfigError, match=r"nats\.tls.*expected keys caFile, certFile, keyFile"):
        config_from_dict({"nats": {"tls": {"ca": "x"}}})
