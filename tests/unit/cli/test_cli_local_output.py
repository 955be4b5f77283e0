"""Issue 15 point 1 and `local -c`: command output on request, failures listed as failures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from support import run_agent


def commands(*cmds: dict[str, Any]) -> str:
    """The `local` text for ``cmds`` (JSON objects are Jsonnet)."""
    return ", ".join(json.dumps(c) for c in cmds)


SAY = {"id": "say", "check": "echo looked; exit 1", "change": "echo said hello"}
BOOM = {"id": "boom", "check": "exit 1", "change": "echo it broke; exit 3"}


def test_local_v_prints_each_commands_output_under_its_id(tmp_path: Path) -> None:
    res = run_agent("local", "-v", commands(SAY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == [
        "say (check):",
        "    looked",
        "say (change):",
        "    said hello",
        "Changed 1: say",
    ]


def test_local_without_v_prints_no_output_of_a_change_that_worked(tmp_path: Path) -> None:
    res = run_agent("local", commands(SAY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["Changed 1: say"]


def test_json_format_has_the_outputs_as_a_field(tmp_path: Path) -> None:
    res = run_agent("-f", "json", "local", "-v", commands(SAY), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["changedIDs"] == ["say"]
    assert doc["outputs"] == [
        {"id": "say", "parentID": "local", "step": "check", "output": "looked"},
        {"id": "say", "parentID": "local", "step": "change", "output": "said hello"},
    ]


def test_failed_change_shows_its_output_without_v_and_is_listed_as_failed(
    tmp_path: Path,
) -> None:
    res = run_agent("local", commands(SAY, BOOM), cwd=tmp_path)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        "Changed 1: say",
        "Failed 1: boom",
        "boom (change):",
        "    it broke",
    ]
    assert "ERROR: error changing id local > boom" in res.stderr


def test_json_format_lists_a_failed_change_under_failed_ids(tmp_path: Path) -> None:
    res = run_agent("-f", "json", "local", commands(BOOM), cwd=tmp_path)
    assert res.returncode == 1
    doc = json.loads(res.stdout)
    assert doc["failedIDs"] == ["boom"]
    assert doc["failedOutputs"] == ["it broke"]
    assert doc["changedIDs"] == ["boom"]  # Etcha's key keeps Etcha's meaning
    assert "exit status 3" in doc["err"]


def test_local_c_runs_checks_and_changes_nothing(tmp_path: Path) -> None:
    made = tmp_path / "made"
    cmd = {"id": "make", "check": f"test -f {made}", "change": f"touch {made}"}
    res = run_agent("local", "-c", commands(cmd), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines() == ["Would change 1: make"]
    assert not made.exists()


def test_test_v_logs_each_commands_output(tmp_path: Path) -> None:
    (tmp_path / "p.jsonnet").write_text(
        "{run: ["
        + json.dumps(
            {
                "id": "note",
                "check": f"test -f {tmp_path}/n",
                "change": f"touch {tmp_path}/n; echo noted",
                "remove": f"rm {tmp_path}/n",
            }
        )
        + "]}\n"
    )
    quiet = run_agent("test", "p.jsonnet", cwd=tmp_path)
    loud = run_agent("test", "-v", "p.jsonnet", cwd=tmp_path)
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert "noted" not in quiet.stderr
    assert "Output of note (change):\n    noted" in loud.stderr


def test_run_v_logs_each_commands_output(tmp_path: Path) -> None:
    config = {
        "run": {"stateDir": str(tmp_path)},
        "sources": {"s": {"commands": [{"id": "hi", "check": "exit 1", "change": "echo hey"}]}},
    }
    (tmp_path / "agent.jsonnet").write_text(json.dumps(config))
    quiet = run_agent("run", "-o", cwd=tmp_path)
    loud = run_agent("run", "-o", "-v", cwd=tmp_path)
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert "hey" not in quiet.stderr
    assert "Output of s > hi (change):\n    hey" in loud.stderr
