"""``lint_path`` (:mod:`agent.tools.lint`) called in-process: each kind of finding is placed at its
file, line and column, linters that cannot run or fail are findings, and config errors raise."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError
from agent.tools.lint import LintReport, lint_path

NO_LINTERS: dict[str, Any] = {"shellcheck": None}


def lint(
    path: Path, linters: dict[str, Any] | None = None, exclude: str = "", fmt: bool = False
) -> LintReport:
    lint_config: dict[str, Any] = {"linters": NO_LINTERS if linters is None else linters}
    if exclude:
        lint_config["exclude"] = exclude
    config = config_from_dict({"lint": lint_config})
    return asyncio.run(lint_path(path, config=config, check_format=fmt))


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # findings name files relative to the working directory


def lines(report: LintReport) -> list[str]:
    return [str(f) for f in report.findings]


def test_syntax_render_and_import_errors_are_placed_at_their_line(tmp_path: Path) -> None:
    write(tmp_path / "p" / "bad.libsonnet", "{\n  a: 1,\n  b: ,\n}\n")
    write(tmp_path / "p" / "boom.jsonnet", "{\n  run: [\n    error 'boom',\n  ],\n}\n")
    write(tmp_path / "p" / "miss.jsonnet", "\nlocal x = import 'nothere.libsonnet';\n{run: [x]}\n")
    report = lint(tmp_path / "p")
    assert report.files == ("p/bad.libsonnet", "p/boom.jsonnet", "p/miss.jsonnet")
    found = lines(report)
    assert found[0].startswith('p/bad.libsonnet:3:6: Unexpected: ","')
    assert found[1] == "p/boom.jsonnet:3:5: boom"
    assert found[2].startswith("p/miss.jsonnet:2:11: couldn't find import nothere.libsonnet")
    assert report.summary() == "Linted 3 files: 3 findings"


def test_unknown_keys_and_command_problems_point_at_the_key_and_the_id(tmp_path: Path) -> None:
    write(tmp_path / "keys.jsonnet", "{\n  runn: 1,\n  run: [{ id: 'a', change: 'true' }],\n}\n")
    write(
        tmp_path / "cmds.jsonnet",
        "{\n  run: [\n    { id: 'a', change: 'true' },\n    {  id: 'b', nope: 1 },\n  ],\n}\n",
    )
    assert lines(lint(tmp_path)) == [
        "cmds.jsonnet:4:8: run: command b: unknown field 'nope'",
        'keys.jsonnet:2:3: unknown key "runn" (did you mean "run"?)',
    ]


def test_a_linter_not_on_path_or_unquoted_is_one_finding_on_the_path(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{run: [{ id: 'a', check: 'true', change: 'true' }]}\n")
    report = lint(
        tmp_path / "p.jsonnet",
        {"shellcheck": None, "ghost": {"command": "no-such-linter-xyz"}, "odd": {"command": "'x"}},
    )
    found = lines(report)
    assert len(found) == 2
    assert any(
        f.startswith("p.jsonnet: linter ghost could not run: no-such-linter-xyz not found on PATH")
        for f in found
    )
    assert any("linter odd could not run: command is not shell-quoted words" in f for f in found)


def test_a_failing_linter_is_a_finding_at_the_command_id_with_its_output(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "p.jsonnet",
        "{\n  run: [\n    { id: 'ok', check: 'fine', change: 'c' },\n"
        "    { id: 'bad', check: 'forbidden', change: 'c' },\n  ],\n}\n",
    )
    linter = {"command": "bash -c 'if grep -q forbidden; then echo found it; exit 3; fi'"}
    (finding,) = lint(tmp_path / "p.jsonnet", {"shellcheck": None, "grep": linter}).findings
    assert str(finding) == (
        "p.jsonnet:4:7: linter grep failed for command 'bad' (exit status 3)\n    found it"
    )


def test_the_exclude_regexp_skips_walked_and_named_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "skip.libsonnet", "{ a: , }\n")
    write(tmp_path / "d" / "keep.libsonnet", "{ a: 1 }\n")
    report = lint(tmp_path / "d", exclude=r"skip\.libsonnet$")
    assert report.files == ("d/keep.libsonnet",)
    assert report.ok
    assert lint(tmp_path / "d" / "skip.libsonnet", exclude=r"skip\.libsonnet$").files == ()


@pytest.mark.skipif(shutil.which("jsonnetfmt") is None, reason="jsonnetfmt not installed")
def test_format_check_reports_the_first_difference_and_an_unparsable_file(tmp_path: Path) -> None:
    write(tmp_path / "ok.libsonnet", "{\n  a: 1,\n}\n")
    write(tmp_path / "ugly.libsonnet", '{\n  a: 1,\n     b:  "x"\n}\n')
    write(tmp_path / "broken.libsonnet", "{\n  a: 1,\n  b: ,\n}\n")
    found = [f for f in lint(tmp_path, fmt=True).findings if "jsonnetfmt" in f.message]
    assert [(f.file, f.line, f.col) for f in found] == [
        ("broken.libsonnet", 3, 6),
        ("ugly.libsonnet", 3, 3),
    ]
    assert found[0].message.startswith("jsonnetfmt could not format the file: ")
    assert "+  b: 'x'," in found[1].detail


def test_linter_config_that_is_not_an_exec_object_is_a_config_error(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", json.dumps({"run": []}))
    with pytest.raises(ConfigError, match=r"lint\.linters\.bad"):
        lint(tmp_path / "p.jsonnet", {"shellcheck": None, "bad": {"command": 1}})


def test_only_jsonnet_and_libsonnet_files_of_a_directory_are_linted(tmp_path: Path) -> None:
    write(tmp_path / "d" / "README.txt", "{ not jsonnet")
    write(tmp_path / "d" / "lib.libsonnet", "{ a: 1 }\n")
    assert lint(tmp_path / "d").files == ("d/lib.libsonnet",)


def test_a_pattern_error_outside_commands_is_placed_at_its_key(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{\n  audience: 3,\n  run: [{id: 'a', change: 'true'}],\n}\n")
    (finding,) = lint(tmp_path / "p.jsonnet").findings
    assert str(finding) == (
        "p.jsonnet:2:3: audience: expected a string or a list of strings, got an integer"
    )


def test_linters_see_the_commands_inside_a_group_and_not_script_less_ones(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen"
    write(
        tmp_path / "p.jsonnet",
        "{run: [{id: 'g', commands: [{id: 'inner', change: 'echo inner'}]},"
        " {id: 'x', always: true}]}\n",
    )
    linter = {"command": f"bash -c 'cat >> {seen}; echo >> {seen}'"}
    assert lint(tmp_path / "p.jsonnet", {"shellcheck": None, "cat": linter}).ok
    assert seen.read_text() == "\necho inner\n\n"


@pytest.mark.skipif(
    shutil.which("docker") is not None or shutil.which("podman") is not None,
    reason="a container runtime is installed",
)
def test_a_container_linter_without_a_runtime_is_a_finding(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{run: [{ id: 'a', change: 'true' }]}\n")
    linter = {"containerImage": "koalaman/shellcheck", "command": "shellcheck -"}
    (finding,) = lint(tmp_path / "p.jsonnet", {"shellcheck": linter}).findings
    assert finding.message.startswith(
        "linter shellcheck could not run: no container runtime (docker or podman) for image "
        "koalaman/shellcheck"
    )


@pytest.mark.skipif(shutil.which("jsonnetfmt") is None, reason="jsonnetfmt not installed")
def test_a_missing_final_newline_is_a_format_finding_after_the_last_line(tmp_path: Path) -> None:
    write(tmp_path / "p.libsonnet", "{\n  a: 1,\n}")
    (finding,) = lint(tmp_path / "p.libsonnet", fmt=True).findings
    assert (finding.line, finding.col) == (4, 1)
    assert finding.message == "file is not formatted (jsonnetfmt); diff follows"


def test_a_linter_without_a_command_or_that_cannot_start_is_a_finding(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{run: [{ id: 'a', change: 'true' }]}\n")
    empty = lint(tmp_path / "p.jsonnet", {"shellcheck": None, "x": {"command": ""}})
    assert lines(empty) == [
        "p.jsonnet: linter x could not run: no command configured (install it, or switch it off "
        "in the config with lint.linters.x: null)"
    ]
    stranger = {"command": "cat", "user": "no-such-user-xyz"}
    (finding,) = lint(tmp_path / "p.jsonnet", {"shellcheck": None, "x": stranger}).findings
    assert (finding.line, finding.col) == (1, 10)  # at the command's id
    assert finding.message.startswith("linter x: could not run: error looking up user")
