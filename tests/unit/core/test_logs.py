"""Operator log formats: RFC 3339 times, JSON fields, journald priorities, NO_COLOR."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest
from support import agent_env

from agent.core.logs import colors_allowed, fields, priority, setup

RFC3339 = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}(?:Z|[+-]\d\d:\d\d)"
LOCAL_OK = "{id: 'a', always: true, change: 'true'}"


@pytest.fixture
def agent_logger() -> Iterator[logging.Logger]:
    """The ``agent`` logger, restored after the test (setup() replaces its handler)."""
    root = logging.getLogger("agent")
    saved = (list(root.handlers), root.level, root.propagate)
    yield root
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def _journal_stream(path: Path) -> str:
    st = path.stat()
    return f"{st.st_dev}:{st.st_ino}"


def _run_with_stderr_file(
    tmp_path: Path, stderr: Path, *args: str, env: dict[str, str] | None = None
) -> str:
    """Run the CLI with its stderr on ``stderr`` (a real file); return what it wrote there."""
    stderr.touch()
    with stderr.open("a") as fh:
        subprocess.run(
            [sys.executable, "-m", "agent", *args],
            cwd=tmp_path,
            env=agent_env(env),
            stdout=subprocess.DEVNULL,
            stderr=fh,
            timeout=60,
            check=False,
        )
    return stderr.read_text()


class _Logged:
    """setup() with sys.stderr on a real file (journald's variable naming it when asked)."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.path = tmp_path / "stderr.log"
        self.monkeypatch = monkeypatch
        self.handle: IO[str] | None = None

    def __call__(self, fmt: str, *, journal: bool = False) -> logging.Logger:
        self.handle = self.path.open("w")
        self.monkeypatch.setattr(sys, "stderr", self.handle)
        if journal:
            self.monkeypatch.setenv("JOURNAL_STREAM", _journal_stream(self.path))
        else:
            self.monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        setup("debug", fmt, no_color=True)
        return logging.getLogger("agent.test")

    def lines(self) -> list[str]:
        assert self.handle is not None
        self.handle.flush()
        return self.path.read_text().splitlines()


@pytest.fixture
def logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, agent_logger: logging.Logger
) -> Iterator[_Logged]:
    made = _Logged(tmp_path, monkeypatch)
    yield made
    monkeypatch.undo()
    if made.handle is not None:
        made.handle.close()


# ---------------------------------------------------------------------------- human format


def test_human_lines_start_with_an_rfc3339_time(tmp_path: Path) -> None:
    out = _run_with_stderr_file(tmp_path, tmp_path / "err.log", "local", LOCAL_OK)
    line = next(x for x in out.splitlines() if "Always changed local > a" in x)
    assert re.fullmatch(rf"{RFC3339} INFO  Always changed local > a \[\d+m?s\]", line), line


def test_journal_stream_naming_another_file_keeps_times(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.touch()
    env = {"JOURNAL_STREAM": _journal_stream(other)}
    out = _run_with_stderr_file(tmp_path, tmp_path / "err.log", "local", LOCAL_OK, env=env)
    line = next(x for x in out.splitlines() if "Always changed" in x)
    assert re.match(rf"{RFC3339} INFO ", line) and not line.startswith("<"), line


# ----------------------------------------------------------------------------- JSON format


def test_json_lines_carry_the_fields_passed_with_fields(
    logged: _Logged,
) -> None:
    log = logged("json")
    extra = fields(source="web", id="nginx", trigger="webhook", duration=0.1804, error="exit 1")
    log.error("Failed changing %s", "nginx", extra=extra)
    (line,) = logged.lines()
    doc = json.loads(line)
    assert re.fullmatch(RFC3339, doc.pop("time"))
    assert doc == {
        "level": "error",
        "logger": "agent.test",
        "msg": "Failed changing nginx",
        "source": "web",
        "id": "nginx",
        "trigger": "webhook",
        "duration_ms": 180,
        "error": "exit 1",
    }


def test_json_lines_omit_fields_that_do_not_apply(
    logged: _Logged,
) -> None:
    log = logged("json")
    log.info("Source %s: no changes", "web", extra=fields(source="web"))
    log.debug("plain")
    first, second = (json.loads(x) for x in logged.lines())
    assert set(first) == {"time", "level", "logger", "msg", "source"}
    assert set(second) == {"time", "level", "logger", "msg"} and second["level"] == "debug"


def test_fields_leaves_out_what_is_not_given() -> None:
    assert fields() == {}
    assert fields(id="a", duration=2) == {"id": "a", "duration_ms": 2000}


def test_cli_json_log_lines_are_one_object_each(tmp_path: Path) -> None:
    out = _run_with_stderr_file(tmp_path, tmp_path / "err.log", "-f", "json", "local", LOCAL_OK)
    docs = [json.loads(x) for x in out.splitlines()]
    assert any(d["msg"].startswith("Always changed local > a") for d in docs), out
    assert all({"time", "level", "msg"} <= set(d) for d in docs)


# ------------------------------------------------------------------------------- journald


def test_journald_lines_carry_priorities_without_time(
    logged: _Logged,
) -> None:
    log = logged("human", journal=True)
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    assert logged.lines() == [
        "<7>DEBUG d",
        "<6>INFO  i",
        "<4>WARNING w",
        "<3>ERROR e",
        "<2>CRITICAL c",
    ]


def test_journald_json_lines_carry_priorities(
    logged: _Logged,
) -> None:
    log = logged("json", journal=True)
    log.error("e", extra=fields(id="x"))
    (line,) = logged.lines()
    assert line.startswith("<3>{") and json.loads(line[3:])["id"] == "x"


def test_journald_multiline_records_prefix_every_line(
    logged: _Logged,
) -> None:
    log = logged("human", journal=True)
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    lines = logged.lines()
    assert lines[0] == "<3>ERROR failed" and len(lines) > 2
    assert all(x.startswith("<3>") for x in lines)


def test_journald_stderr_of_a_real_process(tmp_path: Path) -> None:
    err = tmp_path / "journal.log"
    err.touch()
    env = {"JOURNAL_STREAM": _journal_stream(err)}
    out = _run_with_stderr_file(tmp_path, err, "local", LOCAL_OK, env=env)
    line = next(x for x in out.splitlines() if "Always changed" in x)
    assert re.fullmatch(r"<6>INFO  Always changed local > a \[\d+m?s\]", line), line
    failed = _run_with_stderr_file(
        tmp_path, err, "-c", str(tmp_path / "missing.jsonnet"), "show-config", env=env
    )
    assert failed.splitlines()[-1].startswith("<3>ERROR: "), failed


@pytest.mark.parametrize(
    ("level", "prio"),
    [(logging.DEBUG, 7), (logging.INFO, 6), (logging.WARNING, 4), (logging.ERROR, 3), (50, 2)],
)
def test_priority_maps_levels_to_sd_daemon_numbers(level: int, prio: int) -> None:
    assert priority(level) == prio


# ----------------------------------------------------------------------------------- colour


def test_no_color_variable_turns_colours_off(monkeypatch: pytest.MonkeyPatch) -> None:
    read, write = os.openpty()
    with os.fdopen(write, "w") as tty:
        monkeypatch.delenv("NO_COLOR", raising=False)
        assert colors_allowed(False, tty)
        assert not colors_allowed(True, tty)
        monkeypatch.setenv("NO_COLOR", "1")
        assert not colors_allowed(False, tty)
    os.close(read)
