"""What a pinned ``agent push`` of a pattern file to one TLS target loads (issue 14, contract 3).

A real push, in a fresh interpreter, to a TLS server on 127.0.0.1 whose certificate is pinned;
the modules left in ``sys.modules`` at exit are checked against :data:`NOT_FOR_ONE_PINNED_PUSH`:
modules that only some pushes need (or none), kept off the common one for its start-up time.
"""

from __future__ import annotations

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

#: Modules a push of a pattern file to one pinned target does not load, and why they are kept
#: off: ``nacl.signing`` (signing goes through ``nacl._sodium``), ``concurrent.futures`` (one
#: request needs no thread pool), ``secrets`` and ``tempfile`` (the jti needs ``os.urandom``;
#: nothing is written), the trust code and the token decoder (push only signs), asyncio (no
#: build command runs), aiohttp and cryptography (never), ``typing`` (annotations only),
#: and, deferred by agent.core.deferred and never used: ``logging`` (a push that logs nothing
#: at its level: agent.core.logs), ``inspect`` (with ``ast`` and ``dis``),
#: ``traceback``, email's ``random`` and ``datetime`` (with ``calendar``), socket's ``selectors``,
#: the IDNA codec's ``stringprep``, ``shlex``; ``pathlib`` (paths are text) and the IDNA codec
#: with ``unicodedata`` (an ASCII host name is resolved and sent as SNI without it); the URL
#: redaction of ``agent.net.urls`` (only a failed request has text to redact).
NOT_FOR_ONE_PINNED_PUSH = (
    "nacl.signing",
    "concurrent.futures",
    "secrets",
    "tempfile",
    "agent.trust",
    "agent.jws.compact",
    "agent.jws.tokens",
    "asyncio",
    "aiohttp",
    "cryptography",
    "typing",
    "logging",
    "inspect",
    "ast",
    "dis",
    "traceback",
    "random",
    "datetime",
    "calendar",
    "selectors",
    "stringprep",
    "shlex",
    "pathlib",
    "encodings.idna",
    "unicodedata",
    "agent.net.urls",
)

#: (modules deferred by agent.core.deferred and never used are not counted as loaded)
DUMP = (
    "import sys, atexit\n"
    "def _loaded():\n"
    "    return sorted(n for n, m in list(sys.modules.items()) if type(m).__name__ != 'Deferred')\n"
    "atexit.register(lambda: print('MODULES=' + ','.join(_loaded()), file=sys.stderr))\n"
    "from agent.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


_Push = push_answer_handler(b'{"changedIDs": ["a"], "changedOutputs": ["done"], "removedIDs": []}')


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path, str]]:
    with tls_http_server(tmp_path_factory.mktemp("tls"), _Push) as served:
        yield served


def test_pinned_push_of_a_file_to_one_target_loads_only_what_it_uses(
    tmp_path: Path, target: tuple[int, Path, str]
) -> None:
    port, _, fingerprint = target
    (tmp_path / "main.jsonnet").write_text("{run: [{id: 'a', check: 'false', change: 'true'}]}\n")
    private, _ = generate_keys("ed25519", "k")
    (tmp_path / "sign.json").write_text(f'{{"build": {{"signingKey": "{private}"}}}}')
    args = ["-c", "sign.json", "push", "-h", "127.0.0.1", "-p", str(port)]
    args += ["--fingerprint", fingerprint, "core", "main.jsonnet"]
    # run with -S, as on a host
    res = run_python(DUMP, *args, cwd=tmp_path, timeout=120, host_like=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Changed 1: a" in res.stdout, res.stdout
    loaded = dumped_modules(res.stderr, "MODULES")
    assert {"ssl", "http.client", "nacl._sodium", "_gojsonnet"} <= set(loaded)  # it ran
    assert [m for m in loaded if m.startswith(NOT_FOR_ONE_PINNED_PUSH)] == []
