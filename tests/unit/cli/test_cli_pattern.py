"""`agent render` and `agent local` through the installed CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support import run_agent

from agent.jws.keys import generate_keys

agent = run_agent


@pytest.fixture
def proj(tmp_path: Path) -> Path:
    private, public = generate_keys("ed25519", "cli")
    (tmp_path / "agent.jsonnet").write_text(
        json.dumps(
            {
                "build": {"signingKey": private},
                "run": {"verifyKeys": [public]},
                "sources": {"audit": {"checkOnly": True}},
            }
        )
    )
    (tmp_path / "p.jsonnet").write_text(
        "local dir = std.native('getConfig')().vars.dir;\n"
        "{run: [\n"
        "  {id: 'one', check: 'test -f ' + dir + '/one', change: 'touch ' + dir + '/one',"
        " remove: 'rm ' + dir + '/one'},\n"
        "  {id: 'group', commands: [{id: 'two', check: 'test -f ' + dir + '/two',"
        " change: 'touch ' + dir + '/two', remove: 'rm ' + dir + '/two'}]},\n"
        "]}\n"
    )
    return tmp_path


def test_render_pattern_file_prints_the_pattern(proj: Path) -> None:
    res = agent("-x", "vars_dir=/x", "render", "p.jsonnet", cwd=proj)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert [c["id"] for c in doc["run"]] == ["one", "group"]
    assert doc["run"][0]["check"] == "test -f /x/one"


def test_render_jsonnet_text(proj: Path) -> None:
    res = agent("render", "{run: [{id: 'a', always: true}]}", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["run"][0]["id"] == "a"


def test_render_a_verified_token_from_its_embedded_files(proj: Path) -> None:
    assert agent("-x", "vars_dir=/built", "build", "p.jsonnet", "t.jwt", cwd=proj).returncode == 0
    (proj / "p.jsonnet").write_text("{run: [{id: 'changed on disk', always: true}]}")
    res = agent("-x", "vars_dir=/host", "render", "t.jwt", cwd=proj)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["run"][0]["id"] == "one"  # from the token, not the file on disk
    assert doc["run"][0]["check"] == "test -f /host/one"  # rendered with the host's vars


def test_render_refuses_a_token_that_does_not_verify(proj: Path) -> None:
    assert agent("-x", "vars_dir=/b", "build", "p.jsonnet", "t.jwt", cwd=proj).returncode == 0
    _, other = generate_keys("ed25519", "other")
    res = agent("-x", f"run_verifyKeys={other}", "render", "t.jwt", cwd=proj)
    assert res.returncode == 1
    assert res.stdout == ""
    assert res.stderr.startswith("ERROR: refusing to render a token that did not verify")


def test_render_missing_file_is_a_usage_error(proj: Path) -> None:
    res = agent("render", "missing.jwt", cwd=proj)
    assert res.returncode == 2 and "does not exist" in res.stderr


def test_local_runs_changes_then_nothing_then_removes(proj: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    x = f"vars_dir={work}"
    first = agent("-x", x, "local", "p.jsonnet", cwd=proj)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip() == "Changed 2: one, two"
    assert sorted(p.name for p in work.iterdir()) == ["one", "two"]
    assert agent("-x", x, "local", "p.jsonnet", cwd=proj).stdout.strip() == "No changes"
    removed = agent("-x", x, "local", "-r", "p.jsonnet", cwd=proj)
    assert removed.stdout.strip() == "Removed 2: two, one"  # remove mode runs in reverse
    assert list(work.iterdir()) == []


def test_local_check_only_source_reports_drift_without_changing(proj: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    res = agent("-x", f"vars_dir={work}", "local", "-s", "audit", "p.jsonnet", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "Would change 2: one, two"
    assert list(work.iterdir()) == []


def test_local_filter_selects_by_parent_id(proj: Path, tmp_path: Path) -> None:
    work = tmp_path / "w"
    work.mkdir()
    res = agent("-x", f"vars_dir={work}", "local", "-f", "group$", "p.jsonnet", cwd=proj)
    assert res.returncode == 0, res.stderr
    assert [p.name for p in work.iterdir()] == ["two"]


def test_local_text_is_wrapped_as_a_run_list(proj: Path) -> None:
    res = agent(
        "local",
        "{id: 'hi', always: true, change: 'echo hello', onChange: ['etcha:stdout']}",
        cwd=proj,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["hello", "Changed 1: hi"]


def test_local_failure_exits_1_with_one_error_line(proj: Path) -> None:
    res = agent("local", "{id: 'bad', always: true, change: 'exit 4'}", cwd=proj)
    assert res.returncode == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1 and "error changing id local > bad" in errors[0]
    assert "Traceback" not in res.stderr
