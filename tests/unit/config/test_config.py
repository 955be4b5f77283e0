"""Tests for agent.config.schema: defaults, loading order, aliases, errors, masking, reference."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from support import REPO, run_agent

from agent.config.schema import (
    MASK,
    Config,
    VerifyKeyEntry,
    config_from_dict,
    find_config_file,
    format_go_duration,
    load_config,
    parse_override_value,
    render_reference,
)
from agent.core.errors import ConfigError
from agent.run.model import Command, Exec

VECTORS = json.loads((REPO / "tests" / "data" / "interop_vectors.json").read_text())
PUB1 = VECTORS["keyPairs"][0]["publicKey"]
PUB2 = VECTORS["keyPairs"][1]["publicKey"]
PRIV1 = VECTORS["keyPairs"][0]["privateKey"]


@pytest.fixture
def warnings_log(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog that also sees ``agent.*`` records even if a CLI test turned propagation off."""
    agent_logger = logging.getLogger("agent")
    old = agent_logger.propagate
    agent_logger.propagate = True
    caplog.set_level(logging.WARNING, logger="agent.config.schema")
    try:
        yield caplog
    finally:
        agent_logger.propagate = old


def load(tmp_path: Path, *, environ: dict[str, str] | None = None, **kw: Any) -> Config:
    return load_config(
        path=kw.pop("path", None),
        overrides=kw.pop("overrides", ()),
        environ=environ or {},
        cwd=kw.pop("cwd", tmp_path),
    )


def warning_texts(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------ defaults


def test_defaults_follow_etcha_code_and_documented_new_keys(tmp_path: Path) -> None:
    c = load(tmp_path)
    assert c.exec.to_dict() == {
        "allowOverride": True,
        "command": "/usr/bin/bash -e -o pipefail -c",
        "envInherit": True,
    }
    assert c.build.push_max_workers == (os.cpu_count() or 1)
    assert c.build.push_token_expires_in == 300.0
    assert c.build.signing_key == "" and c.build.signing_commands == ()
    assert c.build.signing_exec is None and c.build.tls_skip_verify is False
    assert c.run.listen_address == ":4000"
    assert c.run.rate_limiter_rate == "10-M"
    assert c.run.randomized_start_delay_sec == 0
    assert (c.run.timeout_push, c.run.timeout_webhook, c.run.timeout_shell) == (600, 600, 600)
    assert c.run.max_body_bytes == 4 * 1024 * 1024
    assert c.run.tls_disable is False
    assert c.run.push_require_jti is False and c.run.push_require_exp is False
    assert c.run.verify_keys == () and c.run.verify_commands == ()
    assert c.lint.exclude == "etcha.jsonnet|agent.jsonnet"
    assert c.lint.linters == {"shellcheck": {"command": "shellcheck -s bash -e 2016 -e 2154 -"}}
    assert c.cli.log_level == "info" and c.cli.log_format == "human" and not c.cli.no_color
    assert c.sources == {} and c.targets == {} and c.vars == {}
    assert c.http_client.no_system_ca is False


def test_vars_default_has_no_sysinfo(tmp_path: Path) -> None:
    assert "sysinfo" not in load(tmp_path).vars


def test_state_dir_empty_means_cwd(tmp_path: Path) -> None:
    assert load(tmp_path).run.state_dir == str(tmp_path)


def test_state_dir_relative_is_made_absolute_against_cwd(tmp_path: Path) -> None:
    c = load(tmp_path, overrides=["run_stateDir=state/x"])
    assert c.run.state_dir == str(tmp_path / "state" / "x")
    c = load(tmp_path, overrides=["run_stateDir=/var/lib/agent"])
    assert c.run.state_dir == "/var/lib/agent"


def test_source_and_target_defaults(tmp_path: Path) -> None:
    c = config_from_dict({"sources": {"web": {}}, "targets": {"t1": {}}})
    src = c.sources["web"]
    assert src.name == "web" and src.allow_push is False and src.run_frequency == 0.0
    assert src.exec is None and src.commands == () and src.verify_keys == ()
    assert src.max_token_age == 0.0 and src.events_send == ""
    t = c.targets["t1"]
    assert t.hostname == "t1" and t.port == "4000"
    assert t.path_push == "/etcha/v1/push" and t.path_shell == "/etcha/v1/shell"
    assert t.insecure is False and t.source_patterns == {}


def test_config_is_frozen_and_repr_hides_secrets() -> None:
    c = config_from_dict({"build": {"signingKey": "SIGNING-SECRET-XYZ"}})
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.run.listen_address = ":1"  # type: ignore[misc]
    assert "SIGNING-SECRET-XYZ" not in repr(c)
    assert c.build.signing_key == "SIGNING-SECRET-XYZ"


def test_signing_key_is_stored_without_parsing() -> None:
    assert config_from_dict({"build": {"signingKey": "not a key"}}).build.signing_key == "not a key"


# ---------------------------------------------------------------------------------- precedence


def test_precedence_file_then_agent_config_then_agent_vars_then_x(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{run: {listenAddress: ':1'}}")
    env = {
        "AGENT_CONFIG": "{run: {listenAddress: ':2'}}",
        "AGENT_run_listenAddress": ":3",
    }
    assert load(tmp_path).run.listen_address == ":1"
    assert load(tmp_path, environ={"AGENT_CONFIG": env["AGENT_CONFIG"]}).run.listen_address == ":2"
    assert load(tmp_path, environ=env).run.listen_address == ":3"
    c = load(tmp_path, environ=env, overrides=["run_listenAddress=:4"])
    assert c.run.listen_address == ":4"


def test_repeated_x_overrides_apply_in_order(tmp_path: Path) -> None:
    c = load(tmp_path, overrides=["run_listenAddress=:1", "run_listenAddress=:2"])
    assert c.run.listen_address == ":2"


def test_objects_merge_key_by_key_and_lists_replace(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text(
        json.dumps(
            {
                "exec": {"user": "deploy"},
                "vars": {"a": 1, "nested": {"x": 1}},
                "sources": {"web": {"pullPaths": ["/a", "/b"], "allowPush": True}},
            }
        )
    )
    c = load(
        tmp_path,
        overrides=['vars_nested={"y": 2}', 'sources_web_pullPaths=["/c"]', "vars_b=2"],
    )
    assert c.exec.command == "/usr/bin/bash -e -o pipefail -c"
    assert c.exec.user == "deploy"
    assert c.vars == {"a": 1, "b": 2, "nested": {"x": 1, "y": 2}}
    assert c.sources["web"].pull_paths == ("/c",)
    assert c.sources["web"].allow_push is True


def test_null_resets_a_field_to_its_default(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{run: {listenAddress: ':9'}}")
    assert load(tmp_path, overrides=["run_listenAddress=null"]).run.listen_address == ":4000"


def test_null_source_deletes_it(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{sources: {a: {}, b: {}}}")
    assert list(load(tmp_path, overrides=["sources_a=null"]).sources) == ["b"]


def test_env_only_names_with_a_lowercase_letter_are_overrides(tmp_path: Path) -> None:
    env = {
        "AGENT_RUN_LISTENADDRESS": ":7",
        "OTHER_run_listenAddress": ":8",
        "AGENT_vars_x": "1",
    }
    c = load(tmp_path, environ=env)
    assert c.run.listen_address == ":4000"
    assert c.vars == {"x": 1}


def test_env_overrides_apply_in_name_order(tmp_path: Path) -> None:
    env = {"AGENT_vars_b": "[2]", "AGENT_vars": '{"a": 1, "b": [1]}'}
    assert load(tmp_path, environ=env).vars == {"a": 1, "b": [2]}


def test_x_config_and_agent_config_lowercase_render_jsonnet(tmp_path: Path) -> None:
    c = load(tmp_path, overrides=["config={vars: {n: 1 + 2}}"])
    assert c.vars == {"n": 3}
    c = load(tmp_path, environ={"AGENT_config": "{vars: {m: std.length('abc')}}"})
    assert c.vars == {"m": 3}


def test_x_without_equals_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match='expected KEY=VALUE, got no "="'):
        load(tmp_path, overrides=["run_listenAddress"])


def test_x_invalid_json_value_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"override -x vars_v: expected JSON"):
        load(tmp_path, overrides=["vars_v=[1,"])


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("5", 5),
        ("+5", 5),
        ("-3", -3),
        ("007", 7),
        ("true", True),
        ("false", False),
        ("null", None),
        ("[1, 2]", [1, 2]),
        ('{"a": {"b": true}}', {"a": {"b": True}}),
        ("abc", "abc"),
        ("1.5", "1.5"),
        (" 5", " 5"),
        ("1_000", "1_000"),
        ("9223372036854775807", 9223372036854775807),
        ("9223372036854775808", "9223372036854775808"),
        ("True", "True"),
        ("", ""),
        ("a=b", "a=b"),
    ],
)
def test_override_values_are_typed_like_etcha(text: str, value: Any) -> None:
    assert parse_override_value(text) == value
    assert type(parse_override_value(text)) is type(value)


def test_override_path_splits_on_underscore_and_types_value(tmp_path: Path) -> None:
    c = load(
        tmp_path,
        overrides=["vars_n=007", "sources_web_allowPush=true", "targets_t_port=4001"],
    )
    assert c.vars == {"n": 7}
    assert c.sources["web"].allow_push is True
    assert c.targets["t"].port == "4001"


# ---------------------------------------------------------------------------- file discovery


def test_config_file_is_found_in_a_parent_directory(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{vars: {where: 'top'}}")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_config_file(deep) == tmp_path / "agent.jsonnet"
    assert load(tmp_path, cwd=deep).vars == {"where": "top"}


def test_nearest_directory_wins_over_file_name_order(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{vars: {where: 'top'}}")
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "agent.json").write_text('{"vars": {"where": "sub"}}')
    assert load(tmp_path, cwd=sub).vars == {"where": "sub"}


@pytest.mark.parametrize(
    ("present", "winner"),
    [
        (("agent.jsonnet", "agent.yaml", "agent.yml", "agent.json"), "agent.jsonnet"),
        (("agent.yaml", "agent.yml", "agent.json"), "agent.yaml"),
        (("agent.yml", "agent.json"), "agent.yml"),
    ],
)
def test_file_name_order_within_a_directory(
    tmp_path: Path, present: tuple[str, ...], winner: str
) -> None:
    for name in present:
        if name.endswith((".yaml", ".yml")):
            (tmp_path / name).write_text(f"vars:\n  f: {name}\n")
        else:
            (tmp_path / name).write_text(json.dumps({"vars": {"f": name}}))
    assert load(tmp_path).vars == {"f": winner}


def test_no_config_file_means_defaults_silently(
    tmp_path: Path, warnings_log: pytest.LogCaptureFixture
) -> None:
    assert find_config_file(tmp_path) is None
    c = load(tmp_path)
    assert c == config_from_dict({}, cwd=tmp_path)
    assert warning_texts(warnings_log) == []


def test_explicit_config_path_that_does_not_exist_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file nope\.jsonnet: expected an existing file"):
        load(tmp_path, path="nope.jsonnet")


def test_explicit_relative_config_path_is_resolved_against_cwd(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "my.yaml").write_text("vars: {a: 1}\n")
    (tmp_path / "agent.jsonnet").write_text("{vars: {b: 2}}")
    assert load(tmp_path, path="conf/my.yaml").vars == {"a": 1}


def test_yaml_file_loads(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(
        "run:\n  listenAddress: ':5000'\n  timeoutPush: 30s\n"
        "targets:\n  1:\n    port: 4001\nsources:\n  web:\n    runFrequency: 1h30m\n"
    )
    c = load(tmp_path)
    assert c.run.listen_address == ":5000" and c.run.timeout_push == 30.0
    assert c.targets["1"].port == "4001"
    assert c.sources["web"].run_frequency == 5400.0


def test_empty_yaml_file_is_an_empty_config(tmp_path: Path) -> None:
    (tmp_path / "agent.yml").write_text("# nothing\n")
    assert load(tmp_path) == config_from_dict({}, cwd=tmp_path)


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text("run:\n  listenAddress: ':1'\n bad: [\n")
    with pytest.raises(ConfigError, match=r"agent\.yaml: expected YAML, got .* at line \d"):
        load(tmp_path)


def test_json_file_loads(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text('{"build": {"pushMaxWorkers": 3}}')
    assert load(tmp_path).build.push_max_workers == 3


def test_jsonnet_file_imports_relative_to_the_importing_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    (conf / "lib").mkdir(parents=True)
    (conf / "lib" / "vars.libsonnet").write_text("{fromLib: import 'more.libsonnet'}")
    (conf / "lib" / "more.libsonnet").write_text("42")
    (conf / "agent.jsonnet").write_text("{vars: (import 'lib/vars.libsonnet') + {x: 1 + 1}}")
    c = load(tmp_path, path="conf/agent.jsonnet")
    assert c.vars == {"fromLib": 42, "x": 2}


def test_jsonnet_error_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{vars: error 'boom'}")
    with pytest.raises(ConfigError, match=r"agent\.jsonnet.*boom"):
        load(tmp_path)


def test_config_file_must_be_an_object(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text("[1]")
    with pytest.raises(ConfigError, match=r"agent\.json: expected an object, got a list"):
        load(tmp_path)


# -------------------------------------------------------------------------------- key errors


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.jsonnet"
    path.write_text("{sources: {web: {allowPsh: true}}}")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value) == f'unknown config key "sources.web.allowPsh" in {path}'
    assert err.value.hint == 'did you mean "allowPush"?'


@pytest.mark.parametrize(
    ("environ", "overrides", "origin"),
    [
        ({}, ["run_stateDr=/x"], "override -x run_stateDr"),
        ({"AGENT_run_stateDr": "/x"}, [], "env AGENT_run_stateDr"),
        ({"AGENT_CONFIG": "{run: {stateDr: '/x'}}"}, [], "env AGENT_CONFIG"),
        ({}, ["config={run: {stateDr: '/x'}}"], "override -x config"),
    ],
)
def test_unknown_key_in_override_names_the_override(
    tmp_path: Path, environ: dict[str, str], overrides: list[str], origin: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, environ=environ, overrides=overrides)
    assert str(err.value) == f'unknown config key "run.stateDr" in {origin}'


def test_unknown_top_level_key_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r'unknown config key "sourcse" in config'):
        config_from_dict({"sourcse": {}})


def test_unknown_key_in_http_server_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match=r'unknown config key "httpServer.port"'):
        config_from_dict({"httpServer": {"port": 1}})


def test_error_for_unknown_key_does_not_echo_the_value(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, overrides=["build_signingKeyy=SUPERSECRETVALUE"])
    assert "SUPERSECRETVALUE" not in str(err.value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"run": {"listenAddress": 5}},
            '"run.listenAddress" in config: expected a string, got an integer',
        ),
        ({"run": 5}, '"run" in config: expected an object, got an integer'),
        (
            {"sources": {"w": {"allowPush": "yes"}}},
            '"sources.w.allowPush" in config: expected a boolean, got a string',
        ),
        ({"sources": {"w": {"pullPaths": "/a"}}}, "expected a list of strings, got a string"),
        (
            {"sources": {"w": {"pullPaths": [1]}}},
            "expected a list of strings (item), got an integer",
        ),
        ({"sources": {"w": []}}, '"sources.w" in config: expected an object, got a list'),
        (
            {"sources": {"w": {"eventsSend": "("}}},
            '"sources.w.eventsSend" in config: expected a regular expression',
        ),
        (
            {"sources": {"w": {"runFrequency": "often"}}},
            "expected a duration such as 30s, 5m or 1h30m, got 'often'",
        ),
        (
            {"sources": {"w": {"commands": {"id": "a"}}}},
            "expected a list of commands, got an object",
        ),
        (
            {"sources": {"w": {"exec": "bash"}}},
            '"sources.w.exec" in config: expected an object, got a string',
        ),
        ({"run": {"rateLimiterRate": "10/min"}}, "expected a rate such as 10-M"),
        ({"run": {"timeoutPush": -1}}, "expected a non-negative duration"),
        ({"run": {"maxBodyBytes": 0}}, "expected an integer >= 1, got 0"),
        ({"run": {"randomizedStartDelaySec": True}}, "expected an integer, got a boolean"),
        ({"targets": {"t": {"port": "http"}}}, "expected a port between 1 and 65535, got 'http'"),
        ({"targets": {"t": {"port": 70000}}}, "expected a port between 1 and 65535"),
        (
            {"targets": {"t": {"sourcePatterns": {"a": 1}}}},
            "expected an object of strings (value), got an integer",
        ),
        ({"cli": {"logLevel": "loud"}}, "expected one of debug, info, error, none, got 'loud'"),
        ({"lint": {"exclude": "["}}, '"lint.exclude" in config: expected a regular expression'),
        ({"lint": {"linters": {"x": "shellcheck"}}}, "expected an object of exec objects"),
        ({"vars": [1]}, '"vars" in config: expected an object, got a list'),
        ({"exec": "bash"}, '"exec" in config: expected an object, got a string'),
        ({"build": {"pushTokenExpiresIn": "5 min"}}, '"build.pushTokenExpiresIn"'),
    ],
)
def test_wrong_types_name_key_expected_and_got(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_wrong_type_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text("run:\n  tlsDisable: 'yes'\n")
    with pytest.raises(ConfigError) as err:
        load(tmp_path)
    assert str(err.value) == (
        f'config key "run.tlsDisable" in {path}: expected a boolean, got a string'
    )


def test_durations_accept_numbers_of_seconds() -> None:
    c = config_from_dict({"run": {"timeoutShell": 90}, "sources": {"w": {"maxTokenAge": "1h"}}})
    assert c.run.timeout_shell == 90.0 and c.sources["w"].max_token_age == 3600.0


def test_shell_accepts_string_or_exec_object() -> None:
    c = config_from_dict({"sources": {"a": {"shell": "/bin/sh"}, "b": {"shell": {"user": "x"}}}})
    assert c.sources["a"].shell == "/bin/sh" and c.sources["b"].shell == Exec(user="x")


def test_commands_and_exec_are_parsed_into_the_run_model() -> None:
    cmds = [{"id": "a", "change": "true", "exec": {"env": {"A": "1"}}}]
    c = config_from_dict({"sources": {"w": {"commands": cmds, "exec": {"user": "u"}}}})
    assert c.sources["w"].commands == (Command(id="a", change="true", exec=Exec(env={"A": "1"})),)
    assert c.sources["w"].exec == Exec(user="u")
    cmds[0]["id"] = "changed"
    assert c.sources["w"].commands[0].id == "a"
    assert c.to_dict()["sources"]["w"]["commands"] == [
        {"id": "a", "change": "true", "exec": {"env": {"A": "1"}}}
    ]


# ----------------------------------------------------------------------------------- aliases


def test_system_metrics_secret_is_an_old_name_for_key(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict({"run": {"systemMetricsSecret": "m1", "systemPprofSecret": "p1"}})
    assert c.run.system_metrics_key == "m1" and c.run.system_pprof_key == "p1"
    texts = warning_texts(warnings_log)
    assert any('"run.systemMetricsSecret"' in t and "old name" in t for t in texts)
    assert any('"run.systemPprofSecret"' in t and "old name" in t for t in texts)
    assert not any("m1" in t or "p1" in t for t in texts)


def test_newer_alias_wins_when_both_given_in_one_layer(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict({"run": {"systemMetricsSecret": "old", "systemMetricsKey": "new"}})
    assert c.run.system_metrics_key == "new"
    assert any(
        '"run.systemMetricsSecret" and "run.systemMetricsKey" both set' in t
        for t in warning_texts(warnings_log)
    )


def test_later_layer_wins_even_with_the_old_name(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{run: {systemMetricsKey: 'fromfile'}}")
    c = load(tmp_path, overrides=["run_systemMetricsSecret=fromx"])
    assert c.run.system_metrics_key == "fromx"


def test_run_frequency_sec_is_an_old_integer_name(warnings_log: pytest.LogCaptureFixture) -> None:
    c = config_from_dict({"sources": {"w": {"runFrequencySec": 60}}})
    assert c.sources["w"].run_frequency == 60.0
    assert any('"sources.w.runFrequencySec"' in t for t in warning_texts(warnings_log))
    c = config_from_dict({"sources": {"w": {"runFrequencySec": 60, "runFrequency": "2m"}}})
    assert c.sources["w"].run_frequency == 120.0


def test_target_port_accepts_string_key_alias_and_int(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict({"targets": {"a": {"string": "4100"}, "b": {"port": 4200}}})
    assert c.targets["a"].port == "4100" and c.targets["b"].port == "4200"
    assert any('"targets.a.string"' in t for t in warning_texts(warnings_log))
    c = config_from_dict({"targets": {"a": {"string": "4100", "port": "4300"}}})
    assert c.targets["a"].port == "4300"


def test_http_server_and_http_are_aliases_of_run_listener_settings(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict({"http": {"listenAddress": ":1", "tlsKeyPath": "/k"}})
    assert c.run.listen_address == ":1" and c.run.tls_key_path == "/k"
    assert any('"http.listenAddress"' in t and "old name" in t for t in warning_texts(warnings_log))
    c = config_from_dict(
        {
            "run": {"listenAddress": ":1", "rateLimiterRate": "5-S"},
            "http": {"listenAddress": ":2"},
            "httpServer": {"listenAddress": ":3", "tlsCertificatePath": "/c"},
        }
    )
    assert c.run.listen_address == ":3" and c.run.tls_certificate_path == "/c"
    assert c.run.rate_limiter_rate == "5-S"
    assert any(
        '"run.listenAddress" and "httpServer.listenAddress" both set' in t
        for t in warning_texts(warnings_log)
    )


def test_http_client_settings_alias_build_settings() -> None:
    c = config_from_dict({"httpClient": {"tlsSkipVerify": True, "caFile": "/ca.pem"}})
    assert c.build.tls_skip_verify is True and c.http_client.tls_skip_verify is True
    assert c.build.ca_file == "/ca.pem" and c.http_client.ca_file == "/ca.pem"
    c = config_from_dict({"build": {"tlsSkipVerify": True}, "httpClient": {"noSystemCA": True}})
    assert c.http_client.tls_skip_verify is True and c.http_client.no_system_ca is True


# ---------------------------------------------------------------------- ignored and rejected


@pytest.mark.parametrize("path", ["run.jwtRule", "sources.web.jwtRule"])
def test_jwt_rule_that_does_not_compile_is_a_config_error(path: str) -> None:
    data: dict[str, Any] = {}
    node = data
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = "claims.aud =="
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert str(err.value).startswith(f'config key "{path}" in config: expected a CEL expression')
    assert str(err.value).endswith("see docs/configuration.md#jwtrule")


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({"licenseKey": "abc"}, "licenseKey"),
        ({"sources": {"web": {"runAll": True}}}, "sources.web.runAll"),
        ({"cli": {"macros": {"a": "b"}}}, "cli.macros"),
        ({"run": {"commandsMaxWorkers": 4}}, "run.commandsMaxWorkers"),
        ({"jsonnet": {"anything": 1}}, "jsonnet.anything"),
    ],
)
def test_ignored_keys_load_with_a_warning(
    warnings_log: pytest.LogCaptureFixture, data: dict[str, Any], path: str
) -> None:
    c = config_from_dict(data)
    assert c == config_from_dict({"sources": {"web": {}}} if "sources" in data else {})
    assert f'config key "{path}" in config is accepted and ignored' in warning_texts(warnings_log)


# ------------------------------------------------------------------------------- verify keys


def test_verify_keys_accept_strings_and_object_form() -> None:
    c = config_from_dict(
        {
            "run": {
                "verifyKeys": [
                    PUB1,
                    {
                        "key": PUB2,
                        "notBefore": "2025-01-01T00:00:00Z",
                        "notAfter": "2026-01-01T02:00:00+02:00",
                    },
                ]
            }
        }
    )
    assert c.run.verify_keys == (
        VerifyKeyEntry(PUB1),
        VerifyKeyEntry(
            PUB2,
            datetime(2025, 1, 1, tzinfo=UTC),
            datetime(2026, 1, 1, tzinfo=UTC),
        ),
    )
    assert c.to_dict()["run"]["verifyKeys"] == [
        PUB1,
        {"key": PUB2, "notAfter": "2026-01-01T00:00:00Z", "notBefore": "2025-01-01T00:00:00Z"},
    ]


def test_verify_keys_bare_string_is_one_key_and_empty_string_is_none() -> None:
    c = config_from_dict({"sources": {"a": {"verifyKeys": PUB1}, "b": {"verifyKeys": ""}}})
    assert c.sources["a"].verify_keys == (VerifyKeyEntry(PUB1),)
    assert c.sources["b"].verify_keys == ()


def test_verify_keys_from_yaml_timestamps(tmp_path: Path) -> None:
    (tmp_path / "agent.yaml").write_text(
        f"run:\n  verifyKeys:\n    - key: '{PUB1}'\n      notBefore: 2025-01-01T00:00:00Z\n"
    )
    entry = load(tmp_path).run.verify_keys[0]
    assert entry.not_before == datetime(2025, 1, 1, tzinfo=UTC) and entry.not_after is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (["ed25519public:notbase64!!"], '"run.verifyKeys" in config: item 0:'),
        ([PUB1, "bogus"], '"run.verifyKeys" in config: item 1:'),
        ([PRIV1], '"run.verifyKeys" in config: item 0:'),
        ([{"key": PUB1, "notBefore": "2025-01-01T00:00:00"}], "with a zone"),
        ([{"key": PUB1, "notBefore": "yesterday"}], "expected notBefore as an RFC 3339 time"),
        (
            [
                {
                    "key": PUB1,
                    "notBefore": "2026-01-01T00:00:00Z",
                    "notAfter": "2025-01-01T00:00:00Z",
                }
            ],
            "notBefore before notAfter",
        ),
        (
            [{"key": PUB1, "until": "x"}],
            "expected keys actions, key, notAfter, notBefore, sources, got 'until'",
        ),
        ([{"notAfter": "2025-01-01T00:00:00Z"}], "item 0 to be a key string, got null"),
        ([5], "item 0 to be a key string, got an integer"),
        ({"key": PUB1}, "expected a list of verify keys, got an object"),
    ],
)
def test_bad_verify_keys_are_errors(keys: Any, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"run": {"verifyKeys": keys}})
    assert message in str(err.value)
    assert "MC4CAQAwBQYDK2VwBCIEIBq" not in str(err.value)


# ---------------------------------------------------------------------- to_dict and masking


def _rich() -> dict[str, Any]:
    return {
        "build": {
            "signingKey": "S1-signing-key-value",
            "signingCommands": [{"id": "sign", "change": "cat key"}],
            "pushTokenExpiresIn": "90s",
        },
        "exec": {"env": {"API_TOKEN": "S2-api-token", "PLAIN": "visible"}},
        "run": {
            "systemMetricsKey": "S3-metrics",
            "systemPprofKey": "S4-pprof",
            "tlsKeyBase64": "S5-tls-key",
            "verifyKeys": [PUB1, {"key": PUB2, "notAfter": "2030-01-01T00:00:00Z"}],
            "timeoutWebhook": "250ms",
        },
        "vars": {"dbPassword": "S6-db", "nested": {"mySecret": {"deep": "S7-deep"}}, "ok": "fine"},
        "sources": {
            "web": {
                "vars": {"Token": "S8-token"},
                "exec": {"env": {"GITHUB_TOKEN": "S9-gh"}},
                "runFrequency": "1h30m",
                "maxTokenAge": "24h",
                "commands": [
                    {"id": "a", "change": "true", "exec": {"env": {"PASSWORD": "S10-pw"}}}
                ],
                "allowedKeys": ["reqYEklgP4"],
            }
        },
        "targets": {"t": {"vars": {"secret_thing": "S11-t"}, "port": 4001}},
    }


SECRETS = [f"S{i}-" for i in range(1, 12)]


def test_to_dict_round_trips_through_config_from_dict() -> None:
    c = config_from_dict(_rich())
    again = config_from_dict(c.to_dict())
    assert again == c
    assert json.loads(json.dumps(c.to_dict())) == c.to_dict()


def test_to_dict_uses_documented_string_forms() -> None:
    d = config_from_dict(_rich()).to_dict()
    assert d["build"]["pushTokenExpiresIn"] == "1m30s"
    assert d["run"]["timeoutPush"] == "10m" and d["run"]["timeoutWebhook"] == "250ms"
    assert d["sources"]["web"]["runFrequency"] == "1h30m"
    assert d["sources"]["web"]["maxTokenAge"] == "24h"
    assert d["targets"]["t"]["port"] == "4001"
    assert d["build"]["signingKey"] == "S1-signing-key-value"


def test_masked_dict_hides_every_secret_anywhere() -> None:
    c = config_from_dict(_rich())
    text = json.dumps(c.masked_dict())
    for marker in SECRETS:
        assert marker not in text
    m = c.masked_dict()
    assert m["build"]["signingKey"] == MASK
    assert m["run"]["systemMetricsKey"] == MASK and m["run"]["systemPprofKey"] == MASK
    assert m["run"]["tlsKeyBase64"] == MASK
    assert m["exec"]["env"] == {"API_TOKEN": MASK, "PLAIN": "visible"}
    assert m["vars"]["nested"]["mySecret"] == MASK and m["vars"]["ok"] == "fine"
    assert m["sources"]["web"]["commands"][0]["exec"]["env"]["PASSWORD"] == MASK
    assert m["build"]["pushTokenExpiresIn"] == "1m30s"
    assert m["run"]["verifyKeys"][0] == PUB1


def test_masked_dict_leaves_unset_secrets_empty() -> None:
    m = config_from_dict({}).masked_dict()
    assert m["build"]["signingKey"] == "" and m["run"]["systemMetricsKey"] == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (300, "5m"),
        (5400, "1h30m"),
        (1.5, "1.5s"),
        (0.25, "250ms"),
        (3661, "1h1m1s"),
        (0.000001, "1us"),
        (7200, "2h"),
        (90.000000001, "1m30.000000001s"),
    ],
)
def test_format_duration_is_go_style_and_parses_back(seconds: float, text: str) -> None:
    from agent.core.durations import parse_duration

    assert format_go_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


# ----------------------------------------------------------------------- reference and speed


def test_docs_configuration_md_is_generated_from_the_schema() -> None:
    doc = REPO / "docs" / "configuration.md"
    assert doc.read_text(encoding="utf-8") == render_reference(), (
        "docs/configuration.md is stale: run `python -m agent.config.schema`"
    )


def test_reference_lists_every_key() -> None:
    text = render_reference()
    for section, keys in (
        config_from_dict({"sources": {"s": {}}, "targets": {"t": {}}}).to_dict().items()
    ):
        if section in ("sources", "targets"):
            keys = next(iter(keys.values()))
        if isinstance(keys, dict) and section not in ("exec", "vars"):
            for key in keys:
                assert f"{key}`" in text, f"{section}.{key} missing from the reference"


def test_regenerating_the_reference_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "configuration.md"
    proc = subprocess.run(
        [sys.executable, "-m", "agent.config.schema", str(out)],
        capture_output=True,
        text=True,
        check=False,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_text(encoding="utf-8") == render_reference()


def test_importing_config_loads_no_heavy_modules() -> None:
    code = (
        "import sys, agent.config.schema\n"
        "heavy = ('cryptography', 'aiohttp', 'yaml', '_gojsonnet', 'nacl', 'agent.jws.keys')\n"
        "print([m for m in sys.modules if m.startswith(heavy)])\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert proc.stdout.strip() == "[]"


def test_null_linter_entry_switches_that_linter_off(tmp_path: Path) -> None:
    from agent.config.schema import config_from_dict

    assert "shellcheck" in config_from_dict({}, cwd=tmp_path).lint.linters
    off = config_from_dict({"lint": {"linters": {"shellcheck": None}}}, cwd=tmp_path)
    assert dict(off.lint.linters) == {}


def test_max_token_age_is_a_duration_not_a_secret(tmp_path: Path) -> None:
    from agent.config.schema import config_from_dict

    cfg = config_from_dict(
        {"sources": {"web": {"maxTokenAge": "168h"}}, "vars": {"apiToken": "hunter2"}},
        cwd=tmp_path,
    )
    masked = cfg.masked_dict()
    assert masked["sources"]["web"]["maxTokenAge"] == "168h"
    assert masked["vars"]["apiToken"] == "***"


# ------------------------------------------------------ target fingerprints and Etcha's old keys

FP = "sha256:" + "ab" * 32


def test_target_fingerprint_is_stored_in_canonical_form() -> None:
    openssl_style = "SHA256:" + ":".join(["AB"] * 32)
    c = config_from_dict({"targets": {"a": {"fingerprint": openssl_style}, "b": {}}})
    assert c.targets["a"].fingerprint == FP
    assert c.targets["b"].fingerprint == ""
    assert c.to_dict()["targets"]["a"]["fingerprint"] == FP


@pytest.mark.parametrize(
    ("value", "got"),
    [
        ("ab" * 32, "got no prefix"),
        ("sha1:" + "ab" * 20, "got 40 characters after sha1:"),
        ("sha256:" + "ab" * 31, "got 62 characters after sha256:"),
        ("sha256:" + "zz" * 32, "got 64 characters after sha256:"),
    ],
)
def test_malformed_target_fingerprint_is_an_error_naming_the_key(value: str, got: str) -> None:
    with pytest.raises(ConfigError) as err:
        config_from_dict({"targets": {"a": {"fingerprint": value}}}, origin="f.json")
    message = str(err.value)
    assert 'config key "targets.a.fingerprint" in f.json' in message
    assert "expected sha256:<64 hex digits>" in message and got in message


def test_fingerprint_on_an_insecure_target_is_an_error() -> None:
    with pytest.raises(ConfigError, match="expected an https target to pin a certificate"):
        config_from_dict({"targets": {"a": {"fingerprint": FP, "insecure": True}}})


def test_push_tls_skip_verify_is_an_old_name_of_tls_skip_verify(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict({"build": {"pushTLSSkipVerify": True}}, origin="old.json")
    assert c.build.tls_skip_verify and c.http_client.tls_skip_verify
    assert warning_texts(warnings_log) == [
        'config key "build.pushTLSSkipVerify" in old.json is an old name; use "build.tlsSkipVerify"'
    ]


def test_push_tls_skip_verify_loses_to_the_new_names_in_one_layer(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict(
        {"build": {"pushTLSSkipVerify": True}, "httpClient": {"tlsSkipVerify": False}}
    )
    assert not c.build.tls_skip_verify
    assert any("both set" in t for t in warning_texts(warnings_log))


def test_push_targets_become_targets_for_their_sources(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict(
        {
            "build": {
                "pushTargets": {
                    "web1": {
                        "hostname": "10.0.0.5",
                        "insecure": True,
                        "path": "/push",
                        "port": 4100,
                        "sources": ["core", "web"],
                        "vars": {"role": "web"},
                    },
                    "db1": {"sources": ["db"]},
                }
            }
        },
        origin="etcha.jsonnet",
    )
    web1, db1 = c.targets["web1"], c.targets["db1"]
    assert (web1.hostname, web1.insecure, web1.path_push, web1.port) == (
        "10.0.0.5",
        True,
        "/push",
        "4100",
    )
    assert dict(web1.source_patterns) == {"core": "", "web": ""}
    assert dict(web1.vars) == {"role": "web"}
    assert (db1.hostname, db1.port, db1.path_push) == ("db1", "4000", "/etcha/v1/push")
    assert dict(db1.source_patterns) == {"db": ""}
    assert warning_texts(warnings_log) == [
        'config key "build.pushTargets" in etcha.jsonnet is an old name; use "targets"'
    ]


def test_targets_entry_wins_over_push_targets_of_the_same_name(
    warnings_log: pytest.LogCaptureFixture,
) -> None:
    c = config_from_dict(
        {
            "build": {"pushTargets": {"t": {"port": 1, "sources": ["a"]}}},
            "targets": {"t": {"port": 2, "sourcePatterns": {"b": ""}}},
        }
    )
    assert c.targets["t"].port == "2" and dict(c.targets["t"].source_patterns) == {"b": ""}
    assert any(
        '"build.pushTargets.t" and "targets.t" both set' in t for t in warning_texts(warnings_log)
    )


def test_push_targets_keys_are_checked_under_their_old_path() -> None:
    with pytest.raises(ConfigError, match=r'unknown config key "build\.pushTargets\.t\.pathPush"'):
        config_from_dict({"build": {"pushTargets": {"t": {"pathPush": "/x"}}}})
    with pytest.raises(ConfigError, match=r'"build\.pushTargets\.t\.sources".*list of strings'):
        config_from_dict({"build": {"pushTargets": {"t": {"sources": "core"}}}})


def test_etcha_show_config_output_loads_with_the_old_name_warnings(tmp_path: Path) -> None:
    sample = REPO / "tests" / "data" / "etcha-show-config.json"
    proc = run_agent("-c", str(sample), "show-config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where = f"in {sample}"
    # Each log line starts with its RFC 3339 time; the rest is compared.
    assert [line.split(" ", 1)[1] for line in proc.stderr.splitlines()] == [
        f'WARNING config key "license" {where} is accepted and ignored',
        f'WARNING config key "licenseKey" {where} is accepted and ignored',
        f'WARNING config key "run.systemMetricsSecret" {where} is an old name; '
        'use "run.systemMetricsKey"',
        f'WARNING config key "run.systemPprofSecret" {where} is an old name; '
        'use "run.systemPprofKey"',
        f'WARNING config key "cli.configPath" {where} is accepted and ignored',
        f'WARNING config key "sources.core.runFrequencySec" {where} is an old name; '
        'use "sources.core.runFrequency"',
        f'WARNING config key "targets.host1.string" {where} is an old name; '
        'use "targets.host1.port"',
    ]
    shown = json.loads(proc.stdout)
    etcha = json.loads(sample.read_text())
    assert shown["exec"] == etcha["exec"]
    assert shown["lint"]["linters"] == etcha["lint"]["linters"]
    assert shown["run"]["stateDir"] == "/var/lib/etcha"
    assert shown["sources"]["core"]["allowPush"] is True
    assert shown["sources"]["core"]["verifyKeys"] == etcha["sources"]["core"]["verifyKeys"]
    assert shown["targets"]["host1"]["port"] == "4000"
    assert shown["targets"]["host1"]["sourcePatterns"] == {"core": ""}
    assert shown["vars"] == etcha["vars"]
    # Etcha's exec (every container field, at its zero value) runs commands.
    marker = tmp_path / "ran"
    command = f"{{id: 'a', always: true, change: 'echo ok > {marker}'}}"
    proc = run_agent("-l", "error", "-c", str(sample), "local", "-s", "core", command, cwd=tmp_path)
    assert (proc.returncode, proc.stdout) == (0, "Changed 1: a\n"), proc.stderr
    assert marker.read_text() == "ok\n"


# ----------------------------------------------------------------------- secrets (issue 12)


def test_masked_dict_hides_url_user_info_query_and_header_values_in_pull_paths() -> None:
    pull = (
        "https://deploy:P1-pw@git.example.com:8443/t.jwt?sig=P2-sig&se=2030"
        "#Authorization:Bearer P3-bearer\r\nX-Api-Key:P4-key\r\nclientTimeout:5\r\nskipVerify:true"
    )
    c = config_from_dict({"sources": {"web": {"pullPaths": [pull, "/var/lib/t.jwt"]}}})
    m = c.masked_dict()
    assert "P1-" not in json.dumps(m) and "P2-" not in json.dumps(m)
    assert m["sources"]["web"]["pullPaths"] == [
        "https://***@git.example.com:8443/t.jwt?sig=***&se=***"
        "#Authorization:***\r\nX-Api-Key:***\r\nclientTimeout:5\r\nskipVerify:true",
        "/var/lib/t.jwt",
    ]
    assert c.sources["web"].pull_paths[0] == pull  # only the display is masked


def test_masked_dict_hides_urls_inside_any_string_value() -> None:
    c = config_from_dict(
        {
            "vars": {"endpoint": "https://u:U1-pw@h/x?token=U2-tok", "note": "plain"},
            "sources": {
                "web": {"commands": [{"id": "c", "change": "curl https://U3-tok@h/?k=U4-k"}]}
            },
        }
    )
    m = c.masked_dict()
    assert not any(f"U{i}-" in json.dumps(m) for i in range(1, 5))
    assert m["vars"] == {"endpoint": "https://***@h/x?token=***", "note": "plain"}
    assert m["sources"]["web"]["commands"][0]["change"] == "curl https://***@h/?k=***"


@pytest.mark.parametrize(
    "name",
    [
        "apiKey",
        "API_KEY",
        "sshPrivateKey",
        "credentials",
        "AWS_CREDENTIAL_FILE_BODY",
        "basicAuth",
        "Authorization",
        "dbPassword",
        "clientSecret",
        "githubToken",
        "PRIVATE",
    ],
)
def test_masked_dict_hides_secret_named_keys_in_vars_env_and_nested(name: str) -> None:
    c = config_from_dict(
        {
            "vars": {name: "V1-top", "nested": {"deeper": [{name: {"x": "V2-nested"}}]}},
            "exec": {"env": {name: "V3-env"}},
            "sources": {"web": {"vars": {name: "V4-src"}}},
            "targets": {"t": {"vars": {name: "V5-tgt"}}},
        }
    )
    m = c.masked_dict()
    assert not any(f"V{i}-" in json.dumps(m) for i in range(1, 6)), json.dumps(m)
    assert m["vars"][name] == MASK and m["exec"]["env"][name] == MASK
    assert m["vars"]["nested"]["deeper"][0][name] == MASK


def test_masked_dict_keeps_public_keys_and_names_visible() -> None:
    c = config_from_dict(
        {
            "build": {"signingKeyPath": "/etc/agent/key", "pushTokenExpiresIn": "5m"},
            "run": {
                "tlsKeyPath": "/etc/tls.key",
                "verifyKeys": [PUB1, {"key": PUB1, "notAfter": "2099-01-01T00:00:00Z"}],
            },
            "vars": {"publicKey": "pub-visible", "sshPublicKey": "ssh-visible", "monkey": ""},
            "sources": {
                "tokens": {
                    "verifyKeys": [{"key": PUB1}],
                    "allowedKeys": ["release"],
                    "maxTokenAge": "1h",
                }
            },
            "targets": {"keyserver": {"sourcePatterns": {"tokens": "main.jsonnet"}}},
        }
    )
    m = c.masked_dict()
    assert m["build"]["signingKeyPath"] == "/etc/agent/key"
    assert m["build"]["pushTokenExpiresIn"] == "5m"
    assert m["run"]["tlsKeyPath"] == "/etc/tls.key"
    assert m["run"]["verifyKeys"] == [PUB1, {"key": PUB1, "notAfter": "2099-01-01T00:00:00Z"}]
    assert m["vars"] == {"publicKey": "pub-visible", "sshPublicKey": "ssh-visible", "monkey": ""}
    src = m["sources"]["tokens"]  # a source named "tokens" is a name, not a secret
    assert src["verifyKeys"] == [PUB1]
    assert src["allowedKeys"] == ["release"] and src["maxTokenAge"] == "1h"
    assert m["targets"]["keyserver"]["sourcePatterns"] == {"tokens": "main.jsonnet"}


def test_public_key_name_with_a_secret_word_is_still_masked() -> None:
    m = config_from_dict({"vars": {"publicKeyToken": "W1-secret"}}).masked_dict()
    assert m["vars"]["publicKeyToken"] == MASK


def test_follow_cross_origin_redirects_defaults_to_false_and_round_trips() -> None:
    default = config_from_dict({})
    assert default.http_client.follow_cross_origin_redirects is False
    assert default.to_dict()["httpClient"]["followCrossOriginRedirects"] is False
    on = config_from_dict({"httpClient": {"followCrossOriginRedirects": True}})
    assert on.http_client.follow_cross_origin_redirects is True
    assert config_from_dict(on.to_dict()) == on
    with pytest.raises(ConfigError, match=r"httpClient\.followCrossOriginRedirects"):
        config_from_dict({"httpClient": {"followCrossOriginRedirects": "yes"}})
