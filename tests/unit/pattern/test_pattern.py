"""Patterns: typed parsing, vars assembly, rendering from disk and (sandboxed) from tokens."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import config_from_dict
from agent.core.errors import PatternError, RenderError
from agent.jws.keys import generate_keys, parse_signing_key, parse_verify_key
from agent.jws.tokens import etcha_claims, sign_token, verify_token
from agent.pattern.load import Pattern, load_from_disk, load_from_text, load_from_token, render_vars
from agent.tools.build import build_token
from agent.trust.gate import Context, TrustGate


def cfg(**data: Any) -> Any:
    return config_from_dict(data, cwd=Path("/tmp"))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class TestPatternFromDict:
    def test_all_fields_parse(self) -> None:
        p, warnings = Pattern.from_dict(
            {
                "audience": ["a", "b"],
                "build": [{"id": "b", "always": True, "change": "true"}],
                "buildExec": {"command": "/bin/sh -c"},
                "buildOutput": "out.jwt",
                "expiresIn": "1h30m",
                "id": "jti1",
                "issuer": "me",
                "run": [{"id": "r", "check": "true"}],
                "runExec": {"envInherit": False},
                "runVars": {"k": 1},
                "subject": "s",
            },
            where="t",
        )
        assert warnings == ()
        assert p.audience == ("a", "b")
        assert p.expires_in == 5400
        assert [c.id for c in p.build] == ["b"] and [c.id for c in p.run] == ["r"]
        assert p.build_exec is not None and p.build_exec.command == "/bin/sh -c"
        assert p.run_exec is not None and p.run_exec.env_inherit is False
        assert (p.id, p.issuer, p.subject, p.build_output) == ("jti1", "me", "s", "out.jwt")
        assert p.run_vars == {"k": 1}

    def test_audience_string_is_one_entry(self) -> None:
        p, _ = Pattern.from_dict({"audience": "web", "run": []}, where="t")
        assert p.audience == ("web",)

    def test_expires_in_sec_is_the_old_integer_form(self) -> None:
        p, _ = Pattern.from_dict({"expiresInSec": 59}, where="t")
        assert p.expires_in == 59

    def test_expires_in_wins_over_expires_in_sec_with_a_warning(self) -> None:
        p, warnings = Pattern.from_dict({"expiresIn": "2m", "expiresInSec": 5}, where="t")
        assert p.expires_in == 120
        assert any("expiresInSec is the old form" in w for w in warnings)

    def test_unknown_key_is_a_warning_when_rendering(self) -> None:
        _, warnings = Pattern.from_dict({"rnu": []}, where="p.jsonnet")
        assert warnings == ('p.jsonnet: unknown key "rnu" (did you mean "run"?)',)

    def test_unknown_key_is_an_error_when_strict(self) -> None:
        with pytest.raises(PatternError, match='unknown key "rnu"'):
            Pattern.from_dict({"rnu": []}, where="p.jsonnet", strict=True)

    def test_unknown_key_without_a_close_known_key_has_no_suggestion(self) -> None:
        _, warnings = Pattern.from_dict({"colour": "x"}, where="p.jsonnet")
        assert warnings == ('p.jsonnet: unknown key "colour"',)

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ([], "expected the pattern to render to an object, got a list"),
            ({"audience": 3}, "audience: expected a string or a list of strings, got an integer"),
            ({"expiresIn": "soon"}, "expiresIn: expected a duration"),
            ({"expiresInSec": -1}, "expiresInSec: expected a non-negative number"),
            ({"runVars": [1]}, "runVars: expected an object, got a list"),
            ({"issuer": 1}, "issuer: expected a string, got an integer"),
            ({"run": [{"check": "x"}]}, "id"),
            ({"runExec": {"comand": "x"}}, "comand"),
        ],
    )
    def test_invalid_patterns_say_what_was_expected(self, data: Any, message: str) -> None:
        with pytest.raises(PatternError, match=message.replace("(", r"\(")):
            Pattern.from_dict(data, where="t")


class TestRenderVars:
    def test_merge_order_run_vars_then_config_then_source(self) -> None:
        config = cfg(
            vars={"a": "config", "b": "config"},
            sources={"web": {"vars": {"b": "source"}}},
        )
        merged = render_vars(config, "web", {"a": "run", "b": "run", "c": "run"})
        assert merged["a"] == "config"
        assert merged["b"] == "source"
        assert merged["c"] == "run"
        assert merged["source"] == "web"
        assert merged["test"] is False
        assert "hostname" in merged["sysinfo"] and "osType" in merged["sysinfo"]

    def test_test_var_is_true_only_for_source_test(self) -> None:
        assert render_vars(cfg(), "test", None)["test"] is True

    def test_forced_vars_win_over_user_vars(self) -> None:
        merged = render_vars(cfg(vars={"source": "spoof", "test": True}), "x", None)
        assert merged["source"] == "x" and merged["test"] is False


class TestLoadFromDisk:
    def test_imports_are_collected_and_vars_reach_the_pattern(self, tmp_path: Path) -> None:
        write(tmp_path / "lib" / "cmd.libsonnet", "function(name) {id: name, always: true}\n")
        path = write(
            tmp_path / "patterns" / "main.jsonnet",
            "local cmd = import '../lib/cmd.libsonnet';\n"
            "local vars = std.native('getConfig')().vars;\n"
            "{run: [cmd(vars.who + '@' + vars.source)]}\n",
        )
        loaded = load_from_disk(path, config=cfg(vars={"who": "me"}), source="web")
        assert [c.id for c in loaded.pattern.run] == ["me@web"]
        assert loaded.entrypoint == "/patterns/main.jsonnet"
        assert set(loaded.files) == {"/patterns/main.jsonnet", "/lib/cmd.libsonnet"}

    def test_exec_chain_config_source_and_run_exec(self, tmp_path: Path) -> None:
        path = write(
            tmp_path / "p.jsonnet",
            "{run: [{id: 'a', always: true}], runExec: {env: {C: 'pattern'}}}",
        )
        config = cfg(
            exec={"env": {"A": "config", "C": "config"}},
            sources={"s": {"exec": {"allowOverride": True, "env": {"B": "source"}}}},
        )
        loaded = load_from_disk(path, config=config, source="s")
        assert loaded.run_exec.env == {"A": "config", "B": "source", "C": "pattern"}
        assert loaded.exec.env == {"A": "config", "B": "source", "C": "config"}

    def test_get_env_sees_only_exec_env_when_env_inherit_is_false(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("INHERITED", "yes")
        path = write(
            tmp_path / "p.jsonnet",
            "{run: [{id: std.native('getEnv')('hello', '') + '/' + "
            "std.native('getEnv')('INHERITED', 'none'), always: true}]}",
        )
        config = cfg(exec={"envInherit": False, "env": {"hello": "world=1"}})
        loaded = load_from_disk(path, config=config, source="")
        assert loaded.pattern.run[0].id == "world=1/none"

    def test_empty_pattern_is_refused(self, tmp_path: Path) -> None:
        path = write(tmp_path / "p.jsonnet", "{run: []}")
        with pytest.raises(PatternError, match="received empty commands"):
            load_from_disk(path, config=cfg(), source="")

    def test_jsonnet_error_names_file_and_line(self, tmp_path: Path) -> None:
        path = write(tmp_path / "p.jsonnet", "{\n  run: [\n    error 'boom',\n  ],\n}\n")
        with pytest.raises(RenderError, match=r"p\.jsonnet:3"):
            load_from_disk(path, config=cfg(), source="")

    def test_unknown_key_warning_is_logged(
        self, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        path = write(tmp_path / "p.jsonnet", "{run: [{id: 'a', always: true}], bulid: []}")
        with caplog.at_level(logging.WARNING, logger="agent.pattern.load"):
            loaded = load_from_disk(path, config=cfg(), source="")
        assert loaded.warnings and 'unknown key "bulid" (did you mean "build"?)' in caplog.text

    def test_text_renders_as_main_jsonnet(self) -> None:
        loaded = load_from_text("{run: [{id: 'x', always: true}]}", config=cfg(), source="s")
        assert loaded.entrypoint == "/main.jsonnet" and loaded.pattern.run[0].id == "x"


def _token(files: dict[str, str], entry: str, key: str, run_vars: Any = None) -> str:
    claims = etcha_claims(
        pattern_entrypoint=entry,
        pattern_files=files,
        build_manifest="",
        run_vars=run_vars or {},
        version="test",
        now=time.time(),
    )
    return sign_token(claims, parse_signing_key(key))


class TestLoadFromToken:
    def setup_method(self) -> None:
        self.private, self.public = generate_keys("ed25519", "t")

    def verified(self, files: dict[str, str], entry: str = "/main.jsonnet", **kw: Any) -> Any:
        gate = TrustGate(cfg(run={"verifyKeys": [self.public]}))
        raw = _token(files, entry, self.private, **kw)
        return asyncio.run(gate.admit(raw, "", Context.OFFLINE))

    def test_vars_jwt_is_the_raw_token_and_run_vars_reach_vars(self) -> None:
        token = self.verified(
            {
                "/main.jsonnet": "local v = std.native('getConfig')().vars;\n"
                "{run: [{id: v.hello, always: true, change: v.jwt}]}"
            },
            run_vars={"hello": "world"},
        )
        loaded = load_from_token(token, config=cfg(), source="web")
        assert loaded.pattern.run[0].id == "world"
        assert loaded.pattern.run[0].change == token.raw

    def test_only_a_verified_token_is_accepted(self) -> None:
        with pytest.raises(TypeError, match="AdmittedToken"):
            load_from_token("a.b.c", config=cfg(), source="")  # type: ignore[arg-type]

    @pytest.mark.parametrize(
        "hostile",
        [
            "import '/etc/passwd'",
            "importstr '/etc/passwd'",
            "importstr '../../../../../etc/passwd'",
            "importbin '/proc/self/environ'",
            "importstr '/etc/hostname'",
        ],
    )
    def test_hostile_token_cannot_read_the_host_disk(self, hostile: str) -> None:
        assert Path("/etc/passwd").exists()
        token = self.verified(
            {"/main.jsonnet": "{run: [{id: std.toString(" + hostile + "), always: true}]}"}
        )
        with pytest.raises(RenderError, match="couldn't find import"):
            load_from_token(token, config=cfg(), source="web")

    def test_imports_resolve_inside_the_embedded_files(self) -> None:
        token = self.verified(
            {
                "/patterns/p.jsonnet": "{run: [import '../lib/c.libsonnet']}",
                "/lib/c.libsonnet": "{id: importstr 'name.txt', always: true}",
                "/lib/name.txt": "from-the-token",
            },
            entry="/patterns/p.jsonnet",
        )
        loaded = load_from_token(token, config=cfg(), source="")
        assert loaded.pattern.run[0].id == "from-the-token"

    def test_build_then_load_round_trip(self, tmp_path: Path) -> None:
        path = write(tmp_path / "p.jsonnet", "{run: [{id: 'a', always: true}], expiresIn: '1m'}")
        config = cfg(build={"signingKey": self.private})
        loaded = load_from_disk(path, config=config, source="")
        raw = asyncio.run(build_token(loaded, config=config))
        token = verify_token(raw, [parse_verify_key(self.public)])
        assert token.exp is not None and token.iat is not None and token.exp - token.iat == 60
        admitted = asyncio.run(
            TrustGate(cfg(run={"verifyKeys": [self.public]})).admit(raw, "", Context.OFFLINE)
        )
        again = load_from_token(admitted, config=config, source="x")
        assert again.pattern.run == loaded.pattern.run
