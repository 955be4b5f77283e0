"""`agent show-config` end to end: real subprocesses, real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import run_agent


def test_show_config_prints_effective_config_as_sorted_indented_json(tmp_path: Path) -> None:
    path = tmp_path / "conf.jsonnet"
    path.write_text("{run: {listenAddress: ':4100'}, sources: {web: {runFrequency: '5m'}}}")
    proc = run_agent("-c", str(path), "show-config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["run"]["listenAddress"] == ":4100"
    assert data["run"]["stateDir"] == str(tmp_path)
    assert data["sources"]["web"]["runFrequency"] == "5m"
    assert proc.stdout == json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_show_config_never_prints_secret_values(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "build:\n  signingKey: SECRET-A-signing\n"
        "run:\n  systemMetricsSecret: SECRET-B-metrics\n  tlsKeyBase64: SECRET-C-tls\n"
        "exec:\n  env:\n    DB_PASSWORD: SECRET-D-db\n"
        "vars:\n  apiToken: SECRET-E-token\n"
        "sources:\n  web:\n    vars:\n      clientSecret: SECRET-F-client\n"
    )
    proc = run_agent(
        "-x",
        "run_systemPprofKey=SECRET-G-pprof",
        "show-config",
        env={"AGENT_vars_myToken": "SECRET-H-env"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "SECRET-" not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["build"]["signingKey"] == "***"
    assert data["vars"] == {"apiToken": "***", "myToken": "***"}
    assert data["exec"]["env"] == {"DB_PASSWORD": "***"}


def test_show_config_applies_env_and_x_overrides_in_order(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text('{"vars": {"a": "file", "b": "file", "c": "file"}}')
    proc = run_agent(
        "-x",
        "vars_c=x",
        "show-config",
        env={"AGENT_CONFIG": "{vars: {b: 'config', c: 'config'}}", "AGENT_vars_c": "env"},
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vars"] == {"a": "file", "b": "config", "c": "x"}


def test_show_config_finds_config_in_parent_directory(tmp_path: Path) -> None:
    (tmp_path / "agent.jsonnet").write_text("{vars: {found: true}}")
    sub = tmp_path / "x" / "y"
    sub.mkdir(parents=True)
    proc = run_agent("show-config", cwd=sub)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["vars"] == {"found": True}


def test_alias_warning_goes_to_stderr_and_stdout_stays_json(tmp_path: Path) -> None:
    (tmp_path / "agent.json").write_text('{"sources": {"w": {"runFrequencySec": 30}}}')
    proc = run_agent("show-config", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sources"]["w"]["runFrequency"] == "30s"
    assert '"sources.w.runFrequencySec"' in proc.stderr


@pytest.mark.parametrize(
    ("files", "args", "expected"),
    [
        (
            {"agent.jsonnet": "{sources: {web: {allowPsh: true}}}"},
            [],
            'ERROR: unknown config key "sources.web.allowPsh" in {dir}/agent.jsonnet',
        ),
        ({}, ["-x", "run_tlsDisable=yes"], 'ERROR: config key "run.tlsDisable" in override'),
        ({}, ["-c", "missing.yaml"], "ERROR: config file missing.yaml: expected an existing file"),
        (
            {"agent.jsonnet": "{run: {jwtRule: 'claims.x =='}}"},
            [],
            'ERROR: config key "run.jwtRule" in {dir}/agent.jsonnet: expected a CEL expression',
        ),
        ({"agent.jsonnet": "{vars: "}, [], "ERROR: error rendering {dir}/agent.jsonnet"),
    ],
)
def test_bad_config_exits_1_with_one_line_on_stderr(
    tmp_path: Path, files: dict[str, str], args: list[str], expected: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    proc = run_agent(*args, "show-config", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(expected.format(dir=tmp_path)), lines[0]


def test_show_config_masks_pull_credentials_and_secret_named_vars_and_env(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "vars:\n"
        "  apiKey: SECRET-1-api\n"
        "  sshPrivateKey: SECRET-2-ssh\n"
        "  credentials: {user: u, pass: SECRET-3-cred}\n"
        "  publicKey: visible-public\n"
        "sources:\n"
        "  web:\n"
        "    pullPaths:\n"
        '      - "https://deploy:SECRET-4-pw@h.example/t.jwt?sig=SECRET-5-sig'
        '#Authorization: Bearer SECRET-6\\r\\nclientTimeout: 5"\n'
    )
    proc = run_agent("show-config", env={"AGENT_vars_deployAuth": "SECRET-7-env"}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "SECRET-" not in proc.stdout + proc.stderr
    data = json.loads(proc.stdout)
    assert data["vars"]["publicKey"] == "visible-public"
    assert data["vars"]["deployAuth"] == "***" and data["vars"]["apiKey"] == "***"
    assert data["sources"]["web"]["pullPaths"] == [
        "https://***@h.example/t.jwt?sig=***#Authorization:***\r\nclientTimeout: 5"
    ]
