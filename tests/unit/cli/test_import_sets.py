"""Issue 14, contract 3 and 4: what each CLI verb imports, and when the system CA store is read.

Each verb runs in a fresh interpreter on a small real input; a wrapper prints the heavy modules
left in ``sys.modules`` at exit. Per verb (decided here, see ``FORBIDDEN``):

- ``render``, ``build`` (an Ed25519 key, no signingCommands) and ``jwt <file>`` run no command
  and make no request: no asyncio, ssl, aiohttp, prometheus_client, apscheduler or cryptography.
- ``local`` runs commands through the engine, which is asyncio-based (asyncio imports ssl), so
  asyncio and ssl are allowed once a command starts a process; aiohttp, prometheus_client,
  apscheduler and cryptography are not. A run whose commands all execute in-process (the file
  helpers) imports no asyncio at all.
- ``push`` needs ssl (TLS); it must not import aiohttp, prometheus_client, apscheduler or
  cryptography. asyncio is not needed by a thread-pool client: forbidden too.

The CA-store test runs ``agent push`` end
to end against a TLS server and counts ``load_default_certs``/``set_default_verify_paths``.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import (
    dumped_modules,
    push_answer_handler,
    run_python,
    tls_http_server,
)

from agent.jws.keys import generate_keys

HEAVY = ("asyncio", "ssl", "aiohttp", "prometheus_client", "apscheduler", "cryptography")
NO_RUNTIME = frozenset(HEAVY)
FORBIDDEN: dict[str, frozenset[str]] = {
    "render": NO_RUNTIME,
    "build": NO_RUNTIME,
    "jwt": NO_RUNTIME,
    "local": NO_RUNTIME - {"asyncio", "ssl"},
    "push": NO_RUNTIME - {"ssl"},
}

WRAPPER = (
    "import sys, atexit\n"
    "def _dump():\n"
    "    top = {m.split('.')[0] for m in sys.modules}\n"
    f"    print('HEAVY=' + ','.join(sorted(top & set({HEAVY!r}))), file=sys.stderr)\n"
    "atexit.register(_dump)\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)

COUNT_CA = (
    "import sys, ssl, atexit\n"
    "calls = []\n"
    "for name in ('load_default_certs', 'set_default_verify_paths'):\n"
    "    orig = getattr(ssl.SSLContext, name)\n"
    "    def spy(self, *a, _orig=orig, _name=name, **k):\n"
    "        calls.append(_name)\n"
    "        return _orig(self, *a, **k)\n"
    "    setattr(ssl.SSLContext, name, spy)\n"
    "atexit.register(lambda: print('CA_LOADS=%d' % len(calls), file=sys.stderr))\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def _run(code: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_python(code, *args, cwd=cwd, timeout=120)


def _heavy(res: subprocess.CompletedProcess[str]) -> set[str]:
    for line in res.stderr.splitlines():
        if line.startswith("HEAVY="):
            return {m for m in line[len("HEAVY=") :].split(",") if m}
    raise AssertionError(f"no import report: {res.stdout}{res.stderr}")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("imports")
    (d / "main.jsonnet").write_text("{run: [{id: 'a', check: 'true', change: 'true'}]}\n")
    private, public = generate_keys("ed25519", "k")
    (d / "sign.json").write_text(f'{{"build": {{"signingKey": "{private}"}}}}')
    (d / "verify.json").write_text(f'{{"run": {{"verifyKeys": ["{public}"]}}}}')
    res = _run(WRAPPER, ["-c", "sign.json", "build", "main.jsonnet", "main.jwt"], d)
    assert res.returncode == 0, res.stderr
    return d


VERBS: dict[str, list[str]] = {
    "render": ["-c", "verify.json", "render", "main.jsonnet"],
    "build": ["-c", "sign.json", "build", "main.jsonnet", "out.jwt"],
    "jwt": ["-c", "verify.json", "jwt", "main.jwt"],
    "local": ["-c", "verify.json", "local", "main.jsonnet"],
    "push": ["-c", "sign.json", "push", "-h", "http://127.0.0.1:9", "core", "true"],
}


@pytest.mark.parametrize("verb", list(VERBS))
def test_each_verb_imports_only_what_it_uses(verb: str, workdir: Path) -> None:
    res = _run(WRAPPER, VERBS[verb], workdir)
    if verb != "push":  # push to a closed port fails by design; the import set is what counts
        assert res.returncode == 0, res.stdout + res.stderr
    assert not _heavy(res) & FORBIDDEN[verb], f"{verb} imported {_heavy(res) & FORBIDDEN[verb]}"


#: (modules deferred by agent.core.deferred and never used are not counted as loaded)
AGENT_DUMP = (
    "import sys, atexit\n"
    "def _loaded():\n"
    "    return sorted(n for n, m in list(sys.modules.items()) if type(m).__name__ != 'Deferred')\n"
    "atexit.register(lambda: print('AGENT=' + ','.join(_loaded()), file=sys.stderr))\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)
#: What ``render`` and ``local`` of a pattern file, with no keys configured, must not load: the
#: trust gate and the token code (only for tokens), the HTTP client (only for a URL, an http
#: getFile or an http copy), the build tool (only for build commands), the daemon.
NOT_FOR_A_FILE = ("agent.trust", "agent.jws", "agent.net.http", "agent.tools.build", "agent.daemon")


@pytest.fixture(scope="module", params=["render", "local"])
def file_run(request: pytest.FixtureRequest, workdir: Path) -> tuple[str, list[str]]:
    """``(verb, modules loaded)`` of ``render``/``local`` of a pattern file, no keys configured
    (one run per verb, shared by the tests below)."""
    verb: str = request.param
    (workdir / "plain.json").write_text("{}")
    res = _run(AGENT_DUMP, ["-c", "plain.json", verb, "main.jsonnet"], workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    return verb, dumped_modules(res.stderr, "AGENT")


def test_render_and_local_of_a_file_load_no_gate_token_http_or_build_code(
    file_run: tuple[str, list[str]],
) -> None:
    _, loaded = file_run
    assert "agent.pattern.load" in loaded  # the dump works
    assert [m for m in loaded if m.startswith(NOT_FOR_A_FILE)] == []


#: Modules ``render`` and ``local`` of a pattern file (no keys, no ``--diff``) no longer load
#: (issue 14, start-up): shutil (with bz2 and lzma: argparse's width, ``which``), datetime (only
#: for validity windows and YAML dates), difflib (only for "did you mean" messages), the masking
#: rules and the config reference (show-config, docs), and for ``local`` the file helpers'
#: diff code with the atomic writer and tempfile (only for ``--diff`` or a helper run in-process).
NOT_AT_START_UP = (
    "shutil",
    "bz2",
    "lzma",
    "datetime",
    "difflib",
    "tempfile",
    "agent.config.masking",
    "agent.config.reference",
    "agent.tools.helpers.diff",
    "agent.tools.helpers.fs",
    "agent.core.atomicio",
)
#: And ``render`` of a file: the URL helpers (only for a token URL or an http getFile), and
#: ``typing`` (annotations only: its names are imported under ``TYPE_CHECKING``), and the
#: registrars of other verbs (``agent.cli.REGISTRAR_VERBS``).
#: Deferred (agent.core.deferred) and never used: logging (nothing is logged at the default level
#: of this run: agent.core.logs), inspect (with ast and dis), traceback, shlex.
#: (pathlib's fnmatch and ntpath are too, but a development venv's editable-install finder
#: imports pathlib before the CLI starts.)
NOT_AT_RENDER = (
    "logging",
    "inspect",
    "ast",
    "dis",
    "traceback",
    "shlex",
    "agent.net.urls",
    "typing",
    *(f"agent.cli.{m}" for m in ("basic", "daemon", "trust")),
)


#: Nor ``local`` of shell commands at ``-l error``: the engine logs through agent.core.logs and its
#: hooks are protocols for the type checker only (agent.run.hooks).
NOT_AT_LOCAL = ("logging", "inspect", "traceback", "typing", "agent.net.urls", "agent.run.hooks")


def test_render_and_local_of_a_file_skip_what_only_other_paths_need(
    file_run: tuple[str, list[str]],
) -> None:
    verb, modules = file_run
    loaded = set(modules)
    assert "agent.config.load" in loaded  # the dump works
    unwanted = NOT_AT_START_UP + (NOT_AT_RENDER if verb == "render" else NOT_AT_LOCAL)
    assert sorted(m for m in unwanted if m in loaded) == []


def _local_without_loop(workdir: Path, name: str, run: str) -> None:
    """``agent local`` of ``{run: [<run>]}`` succeeds without importing asyncio or ssl."""
    pattern = workdir / f"{name}.jsonnet"
    pattern.write_text(f"{{run: [{run}]}}\n")
    (workdir / "plain.json").write_text("{}")
    res = _run(WRAPPER, ["-c", "plain.json", "local", str(pattern)], workdir)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not _heavy(res) & {"asyncio", "ssl"}, _heavy(res)


def test_local_of_helpers_only_runs_without_asyncio(workdir: Path) -> None:
    """Every command runs in-process (the file helper): the engine never needs an event loop,
    so asyncio and ssl are not imported (agent.run.lazyloop); the file is still written."""
    target = workdir / "managed.txt"
    cmd = f"file {{}} -- {target} -"
    _local_without_loop(
        workdir,
        "helpers",
        f"{{id: 'f', check: 'agent {cmd.format('check')}',"
        f" change: 'agent {cmd.format('change')}', stdin: 'hello\\n'}}",
    )
    assert target.read_text() == "hello\n"


def test_local_of_one_shell_command_runs_without_asyncio(workdir: Path) -> None:
    """A run of one shell command starts the persistent shell at once when no event loop runs
    (a spawn would import asyncio and ssl first); the command still runs, in a shell."""
    target = workdir / "made.txt"
    _local_without_loop(
        workdir,
        "one",
        f"{{id: 'one', check: 'test -e {target}', change: 'echo $BASH_VERSION > {target}'}}",
    )
    assert target.read_text().strip()  # bash expanded $BASH_VERSION: it ran in a shell


def test_report_output_logger_is_the_engines() -> None:
    """``agent.tools.report`` copies the engine's output logger name (to avoid importing it)."""
    from agent.run.engine import OUTPUT_LOGGER as ENGINE_LOGGER
    from agent.tools.report import OUTPUT_LOGGER

    assert OUTPUT_LOGGER == ENGINE_LOGGER


# ------------------------------------------------------------------------- CA store, push


_Push = push_answer_handler(b'{"changedIDs": [], "removedIDs": []}')


@pytest.fixture(scope="module")
def tls_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, str]]:
    """A TLS server answering pushes: yields (port, its certificate file, its fingerprint)."""
    with tls_http_server(tmp_path_factory.mktemp("tls"), _Push) as served:
        yield served


def _ca_loads(res: subprocess.CompletedProcess[str]) -> int:
    for line in res.stderr.splitlines():
        if line.startswith("CA_LOADS="):
            return int(line.split("=", 1)[1])
    raise AssertionError(f"no CA report: {res.stdout}{res.stderr}")


@pytest.mark.parametrize("how", ["skip_verify", "fingerprint", "ca_file_no_system_ca"])
def test_push_reads_no_system_ca_store_when_verification_does_not_need_it(
    how: str, workdir: Path, tls_target: tuple[int, Path, str]
) -> None:
    port, cert, fp = tls_target
    overrides = {
        "skip_verify": ["-x", "httpClient_tlsSkipVerify=true"],
        "fingerprint": [],
        "ca_file_no_system_ca": [
            "-x",
            f"httpClient_caFile={cert}",
            "-x",
            "httpClient_noSystemCA=true",
        ],
    }[how]
    pin = ["--fingerprint", fp] if how == "fingerprint" else []
    args = ["-c", "sign.json", *overrides, "push", "-h", "127.0.0.1", "-p", str(port), *pin]
    res = _run(COUNT_CA, [*args, "core", "true"], workdir)
    assert "1 target: 0 changed, 1 unchanged" in res.stdout, res.stdout + res.stderr
    assert _ca_loads(res) == 0


def test_push_with_default_verification_reads_the_system_store(
    workdir: Path, tls_target: tuple[int, Path, str]
) -> None:
    """The spy works: plain verification loads the system store (and refuses the self-signed)."""
    port, _, _ = tls_target
    args = ["-c", "sign.json", "push", "-h", "127.0.0.1", "-p", str(port), "core", "true"]
    res = _run(COUNT_CA, args, workdir)
    assert "TLS verification of" in res.stdout, res.stdout + res.stderr
    assert _ca_loads(res) >= 1


#: What ``render`` of a file no longer loads on a host (issue 14): pathlib with urllib.parse
#: (paths are shown through agent.core.paths), and pathlib's fnmatch and ntpath.
NOT_AT_RENDER_ON_A_HOST = ("pathlib", "urllib.parse", "fnmatch", "ntpath")


#: And ``local`` of a file (its handler shows paths through agent.core.paths too).
NOT_AT_LOCAL_ON_A_HOST = ("pathlib", "fnmatch", "ntpath")


@pytest.mark.parametrize(
    ("verb", "unwanted"), [("render", NOT_AT_RENDER_ON_A_HOST), ("local", NOT_AT_LOCAL_ON_A_HOST)]
)
def test_render_and_local_of_a_file_on_a_host_load_no_pathlib(
    verb: str, unwanted: tuple[str, ...], workdir: Path
) -> None:
    """Run as on a host (``python -S``, :func:`support.host_like_env`)."""
    (workdir / "plain.json").write_text("{}")
    args = ["-c", "plain.json", verb, "./main.jsonnet"]
    res = run_python(AGENT_DUMP, *args, cwd=workdir, timeout=120, host_like=True)
    assert res.returncode == 0, res.stdout + res.stderr
    if verb == "render":
        assert '"id": "a"' in res.stdout
    loaded = set(dumped_modules(res.stderr, "AGENT"))
    assert "agent.config.load" in loaded  # the dump works
    assert sorted(m for m in unwanted if m in loaded) == []
