"""``agent lint [-f] <path>``: Jsonnet syntax, pattern validation, formatting and script linters.

Responsibility: Etcha's ``lint`` (reference etcha-build-verify-cli.md §5.2), extended as issue 4
asks. Every problem is a :class:`Finding` printed as ``file:line:col: message`` (1-based, as
compilers print them, so editors jump to it).

Invariants and decisions:

- A directory is walked recursively for ``.jsonnet`` and ``.libsonnet`` files (sorted); a file
  argument is linted whatever its name. ``lint.exclude`` is a regexp searched (unanchored, like
  Go's ``MatchString``) in each walked file path; matching files are skipped.
- Every file's static imports must resolve (:func:`agent.jsonnet.imports.collect_files`).
- ``.jsonnet`` files are patterns: they are rendered with the source ``test`` (``vars.test`` is
  true, as in ``agent test``) and validated. Unknown pattern keys, which are only warnings when
  rendering, are findings here, and so are command validation problems (one finding each).
- Other files (``.libsonnet``) usually evaluate to functions, so they cannot be rendered; they are
  checked for syntax and static errors (unknown variables) by evaluating ``std.type(import f)``,
  which parses the whole file but evaluates only its top-level value.
- ``-f`` pipes each file through ``jsonnetfmt -`` (Debian package ``jsonnet``) and reports a
  unified diff when the output differs. When ``jsonnetfmt`` is not on PATH a note says so and the
  format check is skipped (not a finding).
- External linters come from ``lint.linters`` (name → exec object). Each command's
  ``check``, ``change`` and ``remove`` are joined with newlines and fed on stdin to the linter,
  run through :mod:`agent.run.shell` with ``script=""`` (the exec's command line is the whole argv).
  A linter whose program is not on PATH (or whose ``containerImage`` has no runtime) cannot
  check anything: that is one finding (on the linted path, without a line) saying how to
  install it or switch it off (``lint.linters.<name>: null``), so a missing ``shellcheck`` never
  passes silently. A non-zero exit is a finding naming the linter and the command id, with the
  linter's output as detail lines.
- Patterns render as under ``agent test``: source ``test`` and ``vars.testDir``, a private
  temporary directory made for the lint run and removed afterwards (nothing runs in it).
- An unknown top-level pattern key is a finding that suggests the nearest known key
  (``unknown key "runn" (did you mean "run"?)``, :func:`difflib.get_close_matches`).
- Lines and columns come from the Jsonnet engine (and ``jsonnetfmt``) errors; a missing import
  is placed at its ``import`` on the line the engine names. Problems in the rendered JSON (which
  has no positions) and linter failures are placed at the command's ``id: 'x'`` field, else
  where the key or quoted id first appears, else (an id built by an expression) at 1:1. A
  jsonnetfmt difference is placed at its first differing character.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import logging
import os
import re
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import AgentError, CommandError, ConfigError, RenderError, SourceError
from agent.jsonnet.imports import collect_files
from agent.jsonnet.natives import NativeContext, make_natives
from agent.jsonnet.sandbox import render_files
from agent.pattern.load import TEST_DIR_VAR, load_from_disk
from agent.run import shell
from agent.run.model import Command, Exec

if TYPE_CHECKING:
    from agent.config.schema import Config

__all__ = [
    "LINT_EXTENSIONS",
    "LINT_SOURCE",
    "Finding",
    "LintReport",
    "find_lint_files",
    "lint_path",
]

logger = logging.getLogger(__name__)

LINT_EXTENSIONS = (".jsonnet", ".libsonnet")

#: The source name patterns render with when linted (``vars.test`` is true, as in ``agent test``).
LINT_SOURCE = "test"

#: Detail lines kept per finding (linter output, diffs).
MAX_DETAIL_LINES = 200

_LOCATION = re.compile(
    r"(?P<file>[^\s:|()]+):"
    r"(?:\((?P<l1>\d+):(?P<c1>\d+)\)-\(\d+:\d+\)|(?P<l2>\d+):(?P<c2>\d+)(?:-\d+)?)"
)
_IMPORT_ERROR = re.compile(r"from (?P<file>\S+?):(?P<line>\d+): ")
_ERROR_PREFIX = re.compile(r"^(?:RUNTIME|STATIC) ERROR: ")
_PROBLEM_SPLIT = re.compile(r"; (?=command )")
_COMMAND_LABEL = re.compile(r"^command (?P<label>.+?): ")


@dataclass(frozen=True, slots=True)
class Finding:
    """One problem in one file.

    Args:
        file: the file, as walked (or the imported file the engine named).
        line: 1-based line number; 0 for a finding about the whole path (printed without one).
        message: one line.
        detail: extra lines (a diff, a linter's output), printed indented.
        col: 1-based column; 0 when unknown (printed as 1).
    """

    file: str
    line: int
    message: str
    detail: tuple[str, ...] = ()
    col: int = 0

    def __str__(self) -> str:
        head = (
            f"{self.file}:{self.line}:{max(self.col, 1)}: {self.message}"
            if self.line > 0
            else f"{self.file}: {self.message}"
        )
        if not self.detail:
            return head
        return "\n".join([head, *(f"    {d}" for d in self.detail)])


@dataclass(frozen=True, slots=True)
class LintReport:
    """The outcome of linting a path.

    Args:
        files: the files linted.
        findings: the problems, in file order.
        notes: things that were not checked and why (missing tools).
    """

    files: tuple[str, ...]
    findings: tuple[Finding, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there are no findings."""
        return not self.findings

    def summary(self) -> str:
        """One line: files linted and findings."""
        n = len(self.findings)
        files = f"{len(self.files)} file{'' if len(self.files) == 1 else 's'}"
        return f"Linted {files}: {n} finding{'' if n == 1 else 's'}"


def _display(path: str | Path) -> str:
    """A path relative to the CWD when it is below it, else as given."""
    p = str(path)
    if os.path.isabs(p):
        try:
            rel = os.path.relpath(p)
        except ValueError:
            return p
        if not rel.startswith(".."):
            return rel
    return p


def _compile_exclude(pattern: str) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ConfigError(
            f"lint.exclude: expected a regular expression, got {pattern!r}: {exc}"
        ) from exc


def find_lint_files(path: Path, exclude: re.Pattern[str] | None = None) -> list[Path]:
    """The files ``lint`` checks under ``path``.

    Args:
        path: a file (linted whatever its extension) or a directory walked for
            ``.jsonnet``/``.libsonnet`` files.
        exclude: files whose path it matches (``re.search``) are skipped.

    Returns:
        The files, sorted.

    Raises:
        SourceError: ``path`` does not exist.
    """
    if not path.exists():
        raise SourceError(f"error opening path {path}: expected a file or directory to lint")
    if not path.is_dir():
        return [] if exclude is not None and exclude.search(str(path)) else [path]
    found: list[Path] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(root) / name
            if not name.endswith(LINT_EXTENSIONS):
                continue
            if exclude is not None and exclude.search(str(file)):
                continue
            found.append(file)
    return found


def _locate(text: str, needles: Iterable[str | re.Pattern[str]]) -> tuple[int, int]:
    """1-based (line, column) of the first needle found in ``text``, else (1, 1).

    Needles are tried in order; a string is searched as is, a compiled pattern with ``search``.
    """
    lines = text.splitlines()
    for needle in needles:
        if not needle:
            continue
        for i, line in enumerate(lines, 1):
            if isinstance(needle, str):
                col = line.find(needle)
            else:
                m = needle.search(line)
                col = -1 if m is None else m.start()
            if col >= 0:
                return i, col + 1
    return 1, 1


def _quoted(value: str) -> list[str]:
    return [f"'{value}'", f'"{value}"', value]


def _id_needles(cid: str) -> list[str | re.Pattern[str]]:
    """Where a command with id ``cid`` is written: its ``id`` field first, then the quoted id."""
    field = re.compile(r"""(?<![\w$])["']?id["']?\s*:+\s*(?P<q>["'])""" + re.escape(cid) + "(?P=q)")
    return [field, *_quoted(cid)]


def _import_col(source: str, line: int, name: str) -> int:
    """Column of the import of ``name`` on ``line`` (1-based), else 1."""
    lines = source.splitlines()
    if not 0 < line <= len(lines):
        return 1
    text = lines[line - 1]
    for needle in (f"'{name}'", f'"{name}"', name):
        col = text.find(needle)
        if col >= 0:
            keyword = text.rfind("import", 0, col)
            return (keyword if keyword >= 0 else col) + 1
    return 1


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


class _Mapper:
    """Maps file-set keys named in engine errors (``/lib/x.libsonnet``) back to disk paths."""

    def __init__(self, real: Path, entrypoint: str | None) -> None:
        self.real = real
        self.base: str | None = None
        if entrypoint:
            abs_entry = os.path.normpath(os.path.abspath(real))
            key = entrypoint.lstrip("/")
            if abs_entry.endswith(key):
                self.base = abs_entry[: len(abs_entry) - len(key)]

    def to_disk(self, name: str) -> str:
        if self.base is not None and name.startswith("/"):
            candidate = os.path.join(self.base, name.lstrip("/"))
            if os.path.isfile(candidate):
                return candidate
        return name


def _render_finding(file: Path, message: str, mapper: _Mapper) -> Finding:
    """A finding for a RenderError message, at the location the engine reported."""
    text = message
    if text.startswith("error rendering "):
        # "error rendering <name>: <engine text>"; the name is ours, the rest the engine's.
        m = re.match(r"error rendering .+?: (?=(?:RUNTIME|STATIC) ERROR: )", text)
        if m is not None:
            text = text[m.end() :]
    imp = _IMPORT_ERROR.search(text)
    if imp is not None and text.startswith("couldn't find import"):
        where = mapper.to_disk(imp.group("file"))
        line = int(imp.group("line"))
        name = text[len("couldn't find import ") :].split(" from ", 1)[0]
        col = _import_col(_read_text(Path(where)), line, name)
        return Finding(_display(where), line, text, col=col)
    segments = [s.strip() for s in text.split(" | ")]
    first = _ERROR_PREFIX.sub("", segments[0]) if segments else text
    loc: re.Match[str] | None = _LOCATION.match(first)
    core = first[loc.end() :].strip() or first if loc is not None else first
    if loc is None:
        loc = next((m for m in map(_LOCATION.match, segments[1:]) if m is not None), None)
    shown = _display(file)
    if loc is None:
        return Finding(shown, 1, core, col=1)
    loc_file = loc.group("file")
    line = int(loc.group("l1") or loc.group("l2"))
    col = int(loc.group("c1") or loc.group("c2"))
    if loc_file.endswith("<lint>"):
        return Finding(shown, line, core, col=col)
    disk = mapper.to_disk(loc_file)
    same = os.path.abspath(disk) == os.path.abspath(file) if os.path.isabs(disk) else False
    if same:
        return Finding(shown, line, core, col=col)
    if os.path.isabs(disk) and os.path.exists(disk):
        return Finding(_display(disk), line, f"{core} (rendering {shown})", col=col)
    return Finding(shown, 1, f"{loc_file}:{line}:{col}: {core}", col=1)


def _strip_where(message: str, where: str) -> str:
    prefix = f"{where}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _pattern_findings(file: Path, message: str, source: str) -> list[Finding]:
    """Findings for a PatternError raised while validating the rendered pattern."""
    where = str(file)
    shown = _display(file)
    for section in ("build", "run"):
        prefix = f"error validating commands in {where}: {section}: "
        if message.startswith(prefix):
            out = []
            for problem in _PROBLEM_SPLIT.split(message[len(prefix) :]):
                m = _COMMAND_LABEL.match(problem)
                needles: list[str | re.Pattern[str]] = []
                if m is not None:
                    needles = _id_needles(m.group("label").split(" > ")[-1])
                line, col = _locate(source, needles)
                out.append(Finding(shown, line, f"{section}: {problem}", col=col))
            return out
    text = _strip_where(message, where)
    key = text.split(":", 1)[0]
    needles = [f"{key}:", *_quoted(key)] if re.fullmatch(r"[A-Za-z]+", key) else []
    line, col = _locate(source, needles)
    return [Finding(shown, line, text, col=col)]


def _warning_finding(file: Path, warning: str, source: str) -> Finding:
    text = _strip_where(warning, str(file))
    m = re.match(r'unknown key "([^"]*)"', text)
    needles = [f"{m.group(1)}:", *_quoted(m.group(1))] if m is not None else []
    line, col = _locate(source, needles)
    return Finding(_display(file), line, text, col=col)


def _commands_to_lint(cmds: Sequence[Command]) -> Iterable[Command]:
    for c in cmds:
        if c.commands:
            yield from _commands_to_lint(c.commands)
        else:
            yield c


def _linter_exec(name: str, spec: Mapping[str, Any]) -> Exec:
    try:
        ex = Exec.from_dict(spec, where=f"lint.linters.{name}")
    except CommandError as exc:
        raise ConfigError(exc.message) from exc
    if ex.env_inherit is None:
        ex = dataclasses.replace(ex, env_inherit=True)
    return ex


def _unavailable(ex: Exec) -> str | None:
    """Why a linter exec cannot run here, or ``None`` when it can."""
    if ex.container_image:
        if shell.container_runtime() is None:
            return f"no container runtime (docker or podman) for image {ex.container_image}"
        return None
    try:
        argv = shlex.split(ex.command or "")
    except ValueError as exc:
        return f"command is not shell-quoted words: {exc}"
    if not argv:
        return "no command configured"
    if shutil.which(argv[0]) is None:
        return f"{argv[0]} not found on PATH"
    return None


async def _run_linters(
    file: Path,
    cmds: Sequence[Command],
    linters: Mapping[str, Exec],
    source: str,
) -> list[Finding]:
    out: list[Finding] = []
    for name, ex in linters.items():
        for cmd in _commands_to_lint(cmds):
            script = f"{cmd.check}\n{cmd.change}\n{cmd.remove}"
            if not script.strip():
                continue
            try:
                res = await shell.run(ex, "", stdin=script)
            except CommandError as exc:
                line, col = _locate(source, _id_needles(cmd.id))
                message = f"linter {name}: could not run: {exc.message}"
                out.append(Finding(_display(file), line, message, col=col))
                break
            if res.ok:
                continue
            detail = tuple(line.rstrip() for line in res.output.strip().splitlines())
            reason = "timed out" if res.timed_out else f"exit status {res.exit_code}"
            line, col = _locate(source, _id_needles(cmd.id))
            out.append(
                Finding(
                    _display(file),
                    line,
                    f"linter {name} failed for command {cmd.id!r} ({reason})",
                    detail[:MAX_DETAIL_LINES],
                    col=col,
                )
            )
    return out


async def _format_finding(file: Path, source: str) -> Finding | None:
    ex = Exec(command="jsonnetfmt -", env_inherit=True)
    res = await shell.run(ex, "", stdin=source)
    if not res.ok:
        first = " ".join(res.output.strip().splitlines()[:1])
        loc = _LOCATION.search(first)
        line, col = (1, 1)
        if loc is not None:
            line = int(loc.group("l1") or loc.group("l2"))
            col = int(loc.group("c1") or loc.group("c2"))
        return Finding(
            _display(file), line, f"jsonnetfmt could not format the file: {first}", col=col
        )
    formatted = res.output
    if formatted == source:
        return None
    line, col = _first_difference(source.splitlines(), formatted.splitlines())
    shown = _display(file)
    diff = difflib.unified_diff(
        source.splitlines(), formatted.splitlines(), shown, f"{shown} (jsonnetfmt)", lineterm=""
    )
    return Finding(
        shown,
        line,
        "file is not formatted (jsonnetfmt); diff follows",
        tuple(diff)[:MAX_DETAIL_LINES],
        col=col,
    )


def _first_difference(old: Sequence[str], new: Sequence[str]) -> tuple[int, int]:
    """1-based (line, column) of the first character where ``old`` and ``new`` differ."""
    for i, (a, b) in enumerate(zip(old, new, strict=False), 1):
        if a != b:
            col = next((j for j, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            return i, (min(len(a), len(b)) if col is None else col) + 1
    return max(min(len(old), len(new)) + 1, 1), 1


def _syntax_check(entrypoint: str, files: Mapping[str, str]) -> None:
    """Parse the entry file fully and evaluate only its top-level value (functions are fine).

    The file is evaluated from its collected file set (imports resolve as in a token, the
    standard library included); external natives are off.
    """
    key = "/<lint>"
    table = {**files, key: f"std.type(import {json.dumps(entrypoint)})"}
    render_files(key, table, natives=make_natives(NativeContext(disable_external=True)))


async def lint_path(
    path: Path,
    *,
    config: Config,
    check_format: bool = False,
    disable_external: bool = False,
) -> LintReport:
    """Lint every Jsonnet file under ``path``.

    Args:
        path: a file or directory.
        config: the loaded config (``lint.exclude``, ``lint.linters``, ``sources.test``).
        check_format: also compare each file with ``jsonnetfmt``'s output.
        disable_external: disable the external Jsonnet natives (``-d``).

    Returns:
        The report.

    Raises:
        SourceError: ``path`` does not exist.
        ConfigError: ``lint.exclude`` or a linter entry is invalid.
    """
    exclude = _compile_exclude(config.lint.exclude)
    files = find_lint_files(path, exclude)
    notes: list[str] = []
    linters, findings = _usable_linters(path, config)
    fmt = check_format and shutil.which("jsonnetfmt") is not None
    if check_format and not fmt:
        notes.append(
            "formatting not checked: jsonnetfmt not found on PATH (Debian package jsonnet)"
        )

    with tempfile.TemporaryDirectory(prefix="agent-lint-") as test_dir:
        for file in files:
            for f in await _lint_file(
                file, config, linters, disable_external, fmt, {TEST_DIR_VAR: test_dir}
            ):
                if f not in findings:
                    findings.append(f)
    return LintReport(
        files=tuple(_display(f) for f in files), findings=tuple(findings), notes=tuple(notes)
    )


def _usable_linters(path: Path, config: Config) -> tuple[dict[str, Exec], list[Finding]]:
    """The configured linters that can run here, and one finding for each that cannot."""
    findings: list[Finding] = []
    linters: dict[str, Exec] = {}
    for name in sorted(config.lint.linters):
        ex = _linter_exec(name, config.lint.linters[name])
        why = _unavailable(ex)
        if why is not None:
            findings.append(
                Finding(
                    _display(path),
                    0,
                    f"linter {name} could not run: {why} (install it, or switch it off in the "
                    f"config with lint.linters.{name}: null)",
                )
            )
            continue
        linters[name] = ex
    return linters, findings


async def _lint_file(
    file: Path,
    config: Config,
    linters: Mapping[str, Exec],
    disable_external: bool,
    fmt: bool,
    extra_vars: Mapping[str, Any],
) -> list[Finding]:
    """The findings of one file."""
    source = _read_text(file)
    mapper = _Mapper(file, None)
    out: list[Finding] = []
    try:
        entrypoint, files = collect_files(file)
        mapper = _Mapper(file, entrypoint)
    except RenderError as exc:
        out.append(_render_finding(file, exc.message, mapper))
    else:
        if file.name.endswith(".jsonnet"):
            out.extend(
                await _lint_pattern(
                    file, source, config, mapper, linters, disable_external, extra_vars
                )
            )
        else:
            try:
                _syntax_check(entrypoint, files)
            except RenderError as exc:
                out.append(_render_finding(file, exc.message, mapper))
    if fmt:
        f = await _format_finding(file, source)
        if f is not None:
            out.append(f)
    return out


async def _lint_pattern(
    file: Path,
    source: str,
    config: Config,
    mapper: _Mapper,
    linters: Mapping[str, Exec],
    disable_external: bool,
    extra_vars: Mapping[str, Any],
) -> list[Finding]:
    try:
        loaded = load_from_disk(
            file,
            config=config,
            source=LINT_SOURCE,
            extra_vars=extra_vars,
            disable_external=disable_external,
        )
    except RenderError as exc:
        return [_render_finding(file, exc.message, mapper)]
    except AgentError as exc:  # PatternError, CommandError: the rendered value is not valid
        return _pattern_findings(file, exc.message, source)
    out = [_warning_finding(file, w, source) for w in loaded.warnings]
    if linters:
        cmds = (*loaded.pattern.build, *loaded.pattern.run)
        out.extend(await _run_linters(file, cmds, linters, source))
    return out
