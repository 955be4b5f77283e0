"""Architecture rules of issue 13 (contract points 1 and 6), checked on the source with :mod:`ast`.

- ``agent.*`` imports sit at module level. A function-level ``agent.*`` import needs the marker
  comment ``# lazy: <reason>`` on its line, and every such line is listed in
  :data:`LAZY_IMPORTS` (so a new exception is a reviewed change). Heavy third-party imports
  (aiohttp, _gojsonnet, cryptography, ...) may stay lazy; they are not ``agent.*``.
- No function is over :data:`MAX_FUNCTION_LINES` lines unless a ``# long: <reason>`` comment sits
  on its ``def`` line or just above it.
- No module is over :data:`MAX_MODULE_LINES` lines.
- Module-level ``agent.*`` imports form no cycle (``TYPE_CHECKING`` imports do not count).

The rules cover :data:`CHECKED_PACKAGES`, every package of ``agent``; :data:`PENDING` (files or
``file::function`` skipped while a rewrite is in flight) is empty. Offenders are reported per file.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import REPO

ROOT = REPO

#: Packages (directories under the repository root) the rules cover.
CHECKED_PACKAGES = (
    "agent/cli",
    "agent/config",
    "agent/core",
    "agent/daemon",
    "agent/jsonnet",
    "agent/jws",
    "agent/net",
    "agent/pattern",
    "agent/run",
    "agent/tools",
    "agent/trust",
)

#: Files, or ``file::function``, owned by other branches at the time of writing; skipped.
PENDING: frozenset[str] = frozenset()

#: ``file::function`` of every justified function-level ``agent.*`` import (marked ``# lazy:``).
LAZY_IMPORTS = frozenset(
    {
        "agent/__main__.py::main",  # the CLI loads after the garbage collector is turned off
        "agent/config/load.py::evaluate_jsonnet",  # the engine loads _gojsonnet
        "agent/core/logs.py::setup",  # the handler's formatters need logging (loaded at first use)
        "agent/config/values.py::_verify_key",  # key code only when keys are configured
        "agent/config/schema.py::__getattr__",  # MASK, render_reference: show-config, docs
        "agent/config/schema.py::_main",  # the reference, only to write the docs
        "agent/config/tree.py::masked_dict",  # the masking rules, only for show-config
        "agent/trust/verify.py::_verify_with_commands",  # the engine (asyncio), verifyCommands
        "agent/cli/push_cmds.py::_nats_push",  # asyncio and nats-py only for push --nats
        "agent/cli/admit.py::with_kept_revocations",  # the daemon's list reader, only when set
        "agent/cli/render_cmds.py::cmd_render",  # the trust gate, only to render a token
        "agent/cli/common.py::read_token_arg",  # the HTTP client, only for a URL
        "agent/cli/common.py::http_client_for",  # the HTTP client, only when a request is made
        "agent/jsonnet/natives.py::_client",  # the HTTP client, only for an http getFile
        "agent/jsonnet/natives.py::_fetch",  # URL parsing, only for an http getFile
        "agent/cli/pattern_cmds.py::_local",  # the build tool, only for build commands
        "agent/cli/pattern_cmds.py::diff_env",  # the file helpers' diff module, for --diff
        "agent/run/engine.py::persistent_shells",  # asyncio, once a run starts a process
        "agent/run/shell.py::run",  # asyncio (agent.run.aioproc), once a process starts
        "agent/run/shell.py::spawn_pty",  # asyncio (agent.run.aioproc), for a remote shell
        "agent/tools/helpers/copy.py::read_source",  # the HTTP client, only for a URL source
        "agent/tools/inprocess.py::try_run",  # the helper verbs once one runs; urls for a copy
        "agent/tools/inprocess.py::_call",  # the helper verbs (loaded by try_run already)
        "agent/pattern/load.py::render_token",  # the gate's type, loaded when a token is
        "agent/daemon/telemetry.py::metrics_for",  # prometheus_client, only with a metrics key
        "agent/daemon/service.py::_serving",  # the NATS side, only with nats.servers
        "agent/daemon/app.py::shell_sessions",  # pty and termios, at the first shell request
        "agent/cli/daemon_cmds.py::cmd_run",  # the result reports, only for `run -v`
        "agent/tools/build.py::delegation_chain",  # the chain code, only with a chain
        "agent/tools/build.py::header_for",  # the chain code, only with a chain
        "agent/tools/build.py::collect_build",  # the engine (asyncio), only for build commands
        "agent/tools/build.py::_sign_with_commands",  # the engine (asyncio), for signingCommands
        "agent/tools/build.py::sign_claims",  # the scope code, only with build.scope
        "agent/tools/build.py::write_token",  # the atomic writer (tempfile, shutil), off push
        "agent/net/http.py::_redact",  # the URL redaction, only for a failed request
        "agent/tools/push_output.py::load_reporting",  # answer code, loaded while a target works
        "agent/tools/push_output.py::outcome_from_response",  # the Result reader (load_reporting)
        "agent/tools/push_output.py::format_outcome",  # the summary lines (load_reporting)
    }
)

MAX_FUNCTION_LINES = 60
MAX_MODULE_LINES = 600

_LAZY = re.compile(r"#\s*lazy:\s*\S")
_LONG = re.compile(r"#\s*long:\s*\S")


def _modules() -> list[Path]:
    files: list[Path] = []
    for package in CHECKED_PACKAGES:
        files.extend(sorted((ROOT / package).rglob("*.py")))
    return [*sorted((ROOT / "agent").glob("*.py")), *files]  # with agent/__main__.py


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions(tree: ast.AST) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def _is_agent_import(node: ast.AST) -> bool:
    if isinstance(node, ast.ImportFrom):
        return node.level > 0 or (node.module or "").split(".")[0] == "agent"
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] == "agent" for alias in node.names)
    return False


def lazy_agent_imports(source: str) -> list[tuple[int, str, bool]]:
    """``(line, function, marked)`` for each ``agent.*`` import inside a function body."""
    lines = source.splitlines()
    found: dict[int, tuple[int, str, bool]] = {}
    for fn in _functions(ast.parse(source)):
        for node in ast.walk(fn):
            if _is_agent_import(node) and node is not fn:
                line = node.lineno  # type: ignore[attr-defined]
                marked = bool(_LAZY.search(lines[line - 1]))
                found.setdefault(line, (line, fn.name, marked))
    return sorted(found.values())


def long_functions(source: str) -> list[tuple[int, str, int]]:
    """``(line, function, length)`` of each function over the limit without a ``# long:``."""
    lines = source.splitlines()
    out: list[tuple[int, str, int]] = []
    for fn in _functions(ast.parse(source)):
        length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
        if length <= MAX_FUNCTION_LINES:
            continue
        first = min([fn.lineno, *(d.lineno for d in fn.decorator_list)])
        header = lines[max(first - 2, 0) : fn.body[0].lineno - 1]
        if not any(_LONG.search(line) for line in header):
            out.append((fn.lineno, fn.name, length))
    return out


def module_imports(path: Path) -> set[str]:
    """The ``agent.*`` modules a module imports at run time (not under ``TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    out: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
                continue
            if isinstance(node, ast.If | ast.Try):
                visit(node.body)
                visit(getattr(node, "orelse", []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
                continue
            if isinstance(node, ast.Import):
                out.update(a.name for a in node.names if a.name.split(".")[0] == "agent")
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, *([base] if base else [])])
                if base.split(".")[0] == "agent":
                    out.add(base)
                    out.update(f"{base}.{a.name}" for a in node.names)

    visit(tree.body)
    return out


def _pending(rel: str, function: str = "") -> bool:
    return rel in PENDING or (bool(function) and f"{rel}::{function}" in PENDING)


def _report(offenders: dict[str, list[str]]) -> str:
    return "\n".join(f"{file}:\n  " + "\n  ".join(items) for file, items in offenders.items())


# -- the rules --------------------------------------------------------------------------------


def test_agent_imports_sit_at_module_level() -> None:
    offenders: dict[str, list[str]] = {}
    for path in _modules():
        rel = _rel(path)
        for line, function, marked in lazy_agent_imports(path.read_text(encoding="utf-8")):
            if _pending(rel, function):
                continue
            if not marked:
                offenders.setdefault(rel, []).append(f"line {line} in {function}()")
            elif f"{rel}::{function}" not in LAZY_IMPORTS:
                offenders.setdefault(rel, []).append(
                    f"line {line} in {function}(): marked lazy but not listed in LAZY_IMPORTS"
                )
    assert not offenders, "agent.* imports inside functions:\n" + _report(offenders)


def test_every_listed_lazy_import_is_still_marked() -> None:
    marked = {
        f"{_rel(path)}::{function}"
        for path in _modules()
        for _, function, ok in lazy_agent_imports(path.read_text(encoding="utf-8"))
        if ok
    }
    assert sorted(LAZY_IMPORTS - marked) == []


def test_functions_are_at_most_60_lines() -> None:
    offenders: dict[str, list[str]] = {}
    for path in _modules():
        rel = _rel(path)
        for line, function, length in long_functions(path.read_text(encoding="utf-8")):
            if not _pending(rel, function):
                offenders.setdefault(rel, []).append(f"line {line}: {function}() {length} lines")
    assert not offenders, (
        f"functions over {MAX_FUNCTION_LINES} lines without '# long: <reason>':\n"
        + _report(offenders)
    )


def test_modules_are_at_most_600_lines() -> None:
    offenders = {
        _rel(path): [f"{n} lines"]
        for path in _modules()
        if not _pending(_rel(path))
        and (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    }
    assert not offenders, f"modules over {MAX_MODULE_LINES} lines:\n" + _report(offenders)


def test_module_level_imports_form_no_cycle() -> None:
    names = {".".join(p.relative_to(ROOT).with_suffix("").parts): p for p in _modules()}
    names = {n.removesuffix(".__init__"): p for n, p in names.items()}
    graph = {
        n: sorted(m for m in module_imports(p) if m in names and m != n) for n, p in names.items()
    }
    cycles = _cycles(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def _cycles(graph: dict[str, list[str]]) -> list[list[str]]:
    """One cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, []):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


# -- the checks can fail --------------------------------------------------------------------


def test_an_unmarked_function_level_agent_import_is_found() -> None:
    source = (
        "import json\n"
        "def f():\n"
        "    from agent.core.errors import AgentError\n"
        "    import agent.core.logs  # lazy: keeps the CLI light\n"
        "    from . import sibling\n"
        "    import aiohttp\n"
    )
    assert lazy_agent_imports(source) == [(3, "f", False), (4, "f", True), (5, "f", False)]


def test_a_long_function_needs_a_long_comment() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}") == [(1, "f", MAX_FUNCTION_LINES + 1)]
    assert long_functions(f"# long: a table of cases\ndef f():\n{body}") == []
    assert long_functions(f"def f():  # long: a table of cases\n{body}") == []


def test_a_cycle_is_found() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}
    assert _cycles(graph) == [["a", "b", "c"]]


@pytest.mark.parametrize("package", CHECKED_PACKAGES)
def test_checked_package_exists(package: str) -> None:
    assert (ROOT / package / "__init__.py").is_file()


def test_the_daemon_service_stays_under_400_lines() -> None:
    """Issue 13: the daemon's lifecycle module stays small; work lives in its parts."""
    lines = (ROOT / "agent" / "daemon" / "service.py").read_text(encoding="utf-8").count("\n")
    assert lines < 400, f"agent/daemon/service.py has {lines} lines (keep it under 400)"
