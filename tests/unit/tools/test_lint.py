"""`agent lint`: syntax, pattern validation, formatting, external linters, exclusion."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from support import run_agent

from agent.tools.lint import Finding, _locate, find_lint_files

needs_shellcheck = pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck is not installed"
)
needs_jsonnetfmt = pytest.mark.skipif(
    shutil.which("jsonnetfmt") is None, reason="jsonnetfmt (Debian package jsonnet) not installed"
)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


GOOD = """{
  run: [
    {
      id: 'marker',
      check: 'test -e /tmp/agent-lint-marker',
      change: 'touch /tmp/agent-lint-marker',
      remove: 'rm -f /tmp/agent-lint-marker',
    },
  ],
}
"""


def test_clean_tree_has_no_findings_and_exits_0(tmp_path: Path) -> None:
    write(tmp_path / "p" / "good.jsonnet", GOOD)
    write(tmp_path / "p" / "lib.libsonnet", "function(x) { a: x }\n")
    res = run_agent("lint", "p", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "Linted 2 files: 0 findings"


def test_libsonnet_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "p" / "bad.libsonnet", "{\n  a: 1,\n  b: ,\n}\n")
    write(tmp_path / "p" / "unbound.libsonnet", "function(x)\n  { a: y }\n")
    res = run_agent("lint", "p", cwd=tmp_path)
    assert res.returncode == 1
    assert 'p/bad.libsonnet:3:6: Unexpected: "," while parsing terminal' in res.stdout
    assert "p/unbound.libsonnet:2:8: Unknown variable: y" in res.stdout
    assert "lint failure: 2 findings" in res.stderr


def test_jsonnet_render_error_names_file_and_line(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{\n  run: [\n    error 'boom',\n  ],\n}\n")
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:3:5: boom" in res.stdout


def test_error_in_an_imported_library_points_at_the_library(tmp_path: Path) -> None:
    write(tmp_path / "lib" / "bad.libsonnet", "{\n  a: x,\n}\n")
    write(
        tmp_path / "pat" / "p.jsonnet", "local b = import '../lib/bad.libsonnet';\n{run: [b.a]}\n"
    )
    res = run_agent("lint", "pat", cwd=tmp_path)
    assert res.returncode == 1
    assert "lib/bad.libsonnet:2:6: Unknown variable: x (rendering pat/p.jsonnet)" in res.stdout


def test_missing_import_is_reported(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "\nlocal x = import 'nothere.libsonnet';\n{run: [x]}\n")
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:2:11: couldn't find import nothere.libsonnet" in res.stdout


def test_unknown_pattern_keys_are_findings_naming_the_nearest_key(tmp_path: Path) -> None:
    text = GOOD.replace("  run: [", "  runn: 1,\n  colour: 'x',\n  run: [", 1)
    write(tmp_path / "p.jsonnet", text)
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert 'p.jsonnet:2:3: unknown key "runn" (did you mean "run"?)\n' in res.stdout
    assert 'p.jsonnet:3:3: unknown key "colour"\n' in res.stdout


def test_command_validation_problems_are_one_finding_each(tmp_path: Path) -> None:
    text = "{\n  run: [\n    { id: 'a', nope: 1 },\n    { id: 'b', onChange: ['zzz'] },\n  ],\n}\n"
    write(tmp_path / "p.jsonnet", text)
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:3:7: run: command a: unknown field 'nope'" in res.stdout
    assert "p.jsonnet:4:7: run: command b: onChange target zzz does not match any command" in (
        res.stdout
    )


@needs_shellcheck
def test_default_shellcheck_reports_with_file_and_command_id(tmp_path: Path) -> None:
    text = "{\n  run: [\n    { id: 'sc', check: 'echo $foo', change: 'x=`ls`' },\n  ],\n}\n"
    write(tmp_path / "p.jsonnet", text)
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.jsonnet:3:7: linter shellcheck failed for command 'sc' (exit status 1)" in res.stdout
    assert "    In - line 1:" in res.stdout  # shellcheck's output, indented
    assert "SC2086" in res.stdout and "SC2006" in res.stdout


def _path_without(tmp_path: Path, *names: str) -> str:
    """A PATH with sh and the usual tools but none of ``names`` (symlinks to the real ones)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "bash", "env", "cat", "true"):
        found = shutil.which(tool)
        if found is not None and tool not in names:
            (bin_dir / tool).symlink_to(found)
    return str(bin_dir)


def test_missing_linter_is_a_finding_naming_the_fix(tmp_path: Path) -> None:
    text = "{run: [{ id: 'sc', check: 'true', change: 'true' }]}\n"
    write(tmp_path / "p.jsonnet", text)
    path_env = _path_without(tmp_path, "shellcheck", "jsonnetfmt")
    res = run_agent("lint", "-f", "p.jsonnet", cwd=tmp_path, env={"PATH": path_env})
    assert res.returncode == 1, res.stdout + res.stderr
    assert res.stdout.splitlines() == [
        "p.jsonnet: linter shellcheck could not run: shellcheck not found on PATH (install it, "
        "or switch it off in the config with lint.linters.shellcheck: null)",
        "Linted 1 file: 1 finding",
    ]
    assert "note: formatting not checked: jsonnetfmt not found on PATH" in res.stderr


def test_linter_switched_off_in_the_config_is_not_needed(tmp_path: Path) -> None:
    write(tmp_path / "p.jsonnet", "{run: [{ id: 'sc', check: 'echo $foo', change: 'true' }]}\n")
    write(tmp_path / "agent.jsonnet", json.dumps({"lint": {"linters": {"shellcheck": None}}}))
    path_env = _path_without(tmp_path, "shellcheck")
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path, env={"PATH": path_env})
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "Linted 1 file: 0 findings"


def test_configured_linter_gets_joined_scripts_on_stdin(tmp_path: Path) -> None:
    seen = tmp_path / "seen.txt"
    config = {
        "lint": {
            "linters": {
                "grepper": {
                    "command": f"bash -c 'tee {seen} >/dev/null && ! grep -q forbidden {seen}'"
                },
            }
        }
    }
    write(tmp_path / "agent.jsonnet", json.dumps(config))
    text = json.dumps({"run": [{"id": "ok", "check": "forbidden", "change": "c2", "remove": "r3"}]})
    write(tmp_path / "p.jsonnet", text)
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path, env={"PATH": os.defpath})
    assert seen.read_text() == "forbidden\nc2\nr3"
    assert res.returncode == 1
    assert "p.jsonnet:1:11: linter grepper failed for command 'ok' (exit status 1)" in res.stdout


def test_exclude_regexp_skips_matching_files(tmp_path: Path) -> None:
    write(tmp_path / "d" / "skipme.libsonnet", "{ a: , }\n")
    write(tmp_path / "d" / "other.libsonnet", "{}\n")
    assert run_agent("lint", "d", cwd=tmp_path).returncode == 1
    res = run_agent("-x", "lint_exclude=skip", "lint", "d", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Linted 1 file: 0 findings" in res.stdout
    found = find_lint_files(tmp_path / "d")
    assert [p.name for p in found] == ["other.libsonnet", "skipme.libsonnet"]


def test_config_file_is_excluded_by_default(tmp_path: Path) -> None:
    write(tmp_path / "agent.jsonnet", "{}\n")  # not a pattern: it would be a finding
    write(tmp_path / "p.jsonnet", GOOD)
    res = run_agent("lint", ".", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Linted 1 file: 0 findings" in res.stdout


@needs_jsonnetfmt
def test_format_check_prints_a_diff_for_unformatted_files(tmp_path: Path) -> None:
    write(tmp_path / "ok.libsonnet", "{\n  a: 1,\n}\n")
    write(tmp_path / "ugly.libsonnet", '{\n  a: 1,\n     b:  "x"\n}\n')
    res = run_agent("lint", "-f", ".", cwd=tmp_path)
    assert res.returncode == 1
    assert "ugly.libsonnet:3:3: file is not formatted (jsonnetfmt); diff follows" in res.stdout
    assert '    -     b:  "x"' in res.stdout
    assert "    +  b: 'x'," in res.stdout
    assert "ok.libsonnet" not in res.stdout
    assert run_agent("lint", ".", cwd=tmp_path).returncode == 0  # without -f: no finding


def test_command_problem_points_at_its_id_field_not_an_earlier_mention(tmp_path: Path) -> None:
    text = (
        "{\n  run: [\n    { id: 'a', change: 'true', onChange: ['b'] },\n"
        "    {  id: 'b', nope: 1 },\n  ],\n}\n"
    )
    write(tmp_path / "p.jsonnet", text)
    res = run_agent("lint", "p.jsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stdout.splitlines()[0] == "p.jsonnet:4:8: run: command b: unknown field 'nope'"


@needs_jsonnetfmt
def test_unparsable_file_under_format_check_has_jsonnetfmt_line_and_column(
    tmp_path: Path,
) -> None:
    write(tmp_path / "p.libsonnet", "{\n  a: 1,\n  b: ,\n}\n")
    res = run_agent("lint", "-f", "p.libsonnet", cwd=tmp_path)
    assert res.returncode == 1
    assert "p.libsonnet:3:6: jsonnetfmt could not format the file: " in res.stdout


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    res = run_agent("lint", "nope", cwd=tmp_path)
    assert res.returncode == 1
    assert "error opening path nope" in res.stderr


def test_finding_prints_as_file_line_col_message_with_indented_detail() -> None:
    assert str(Finding("a.jsonnet", 3, "bad", col=7)) == "a.jsonnet:3:7: bad"
    assert str(Finding("a", 1, "m", ("x", "y"))) == "a:1:1: m\n    x\n    y"
    assert str(Finding("a", 0, "whole path")) == "a: whole path"


def test_locate_finds_the_first_needle_that_appears() -> None:
    text = "{\n  run: [\n    { id: 'x' },\n  ],\n}\n"
    assert _locate(text, ["'x'"]) == (3, 11)
    assert _locate(text, ["missing", "run:"]) == (2, 3)
    assert _locate(text, ["missing"]) == (1, 1)


def test_files_importing_the_packaged_library_lint_clean_without_a_lib_dir(
    tmp_path: Path,
) -> None:
    write(
        tmp_path / "p" / "site.libsonnet",
        "(import 'etcha/etcha.libsonnet') + {motd(text):: self.file(path='/etc/motd', "
        "contents=text)}\n",
    )
    write(
        tmp_path / "p" / "motd.jsonnet",
        "local site = import 'site.libsonnet';\n{run: [site.motd('hi\\n')]}\n",
    )
    write(tmp_path / "agent.jsonnet", json.dumps({"lint": {"linters": {"shellcheck": None}}}))
    res = run_agent("lint", "p", cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "Linted 2 files: 0 findings"
