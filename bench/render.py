"""Benchmark: rendering a pattern through the agent against the bare gojsonnet binding.

Run with ``.venv/bin/python bench/render.py [N]``. Generates, in a temp dir, a 200-command pattern
that imports 3 libsonnet files and calls the ``getEnv``, ``regexMatch`` and ``getConfig`` natives,
then prints one line ending in PASS or FAIL:

- ``render``: median ms per render through the agent (``collect_files`` once, then
  ``render_files`` with a fresh ``make_natives`` per render) next to the same Jsonnet rendered by
  ``_gojsonnet.evaluate_file`` with a minimal import callback and the same natives implemented
  trivially (no agent logic), and the ratio (target <= 1.20). Both sides parse the JSON output,
  since a render's caller needs the value, not the text.

Exit code 0 on PASS, 1 on FAIL.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _gojsonnet

from agent.jsonnet.imports import collect_files
from agent.jsonnet.natives import NativeContext, make_natives
from agent.jsonnet.sandbox import render_files

TARGET = 1.20
COMMANDS = 200

_MAIN = """\
local cmds = import 'lib/commands.libsonnet';
local util = import 'lib/util.libsonnet';
local n = import '../shared/native.libsonnet';
local cfg = n.getConfig();
{
  id: 'bench',
  runVars: {owner: n.getEnv('USER', 'nobody')},
  run: [
    cmds.file(i, cfg.vars.prefix, n.regexMatch('^[0-9]*[02468]$', std.toString(i)))
    for i in std.range(1, %d)
  ],
}
"""
_COMMANDS = """\
local util = import 'util.libsonnet';
{
  file(i, prefix, even):: {
    id: 'file %%s %%d' %% [prefix, i],
    check: util.check('/tmp/bench/%%d' %% i),
    change: 'echo %%s > /tmp/bench/%%d' %% [if even then 'even' else 'odd', i],
    remove: 'rm -f /tmp/bench/%%d' %% i,
    onChange: ['etcha:changed_%%d' %% i],
  },
}
"""
_UTIL = """\
{
  check(path):: 'test -f %s && grep -q . %s' % [path, path],
}
"""
_NATIVE = """\
{
  getConfig(): std.native('getConfig')(),
  getEnv(key, fallback=null): std.native('getEnv')(key, fallback),
  regexMatch(regex, string): std.native('regexMatch')(regex, string),
}
"""

_CONFIG: dict[str, Any] = {"exec": {"command": "/bin/sh -c"}, "vars": {"prefix": "bench"}}


def _write_pattern(root: Path) -> Path:
    (root / "pattern/lib").mkdir(parents=True)
    (root / "shared").mkdir()
    (root / "pattern/main.jsonnet").write_text(_MAIN % COMMANDS)
    (root / "pattern/lib/commands.libsonnet").write_text(_COMMANDS % ())
    (root / "pattern/lib/util.libsonnet").write_text(_UTIL)
    (root / "shared/native.libsonnet").write_text(_NATIVE)
    return root / "pattern/main.jsonnet"


def _bare_natives() -> dict[str, tuple[tuple[str, ...], Callable[..., Any]]]:
    def get_env(key: str, fallback: Any) -> Any:
        return os.environ.get(key) or fallback

    return {
        "getConfig": ((), lambda: _CONFIG),
        "getEnv": (("key", "fallback"), get_env),
        "regexMatch": (("regex", "string"), lambda r, s: re.search(r, s) is not None),
    }


def _bare_import(directory: str, rel: str) -> tuple[str, bytes]:
    path = os.path.join(directory, rel)
    with open(path, "rb") as fh:
        return path, fh.read()


def _median_ms(fn: Callable[[], object], n: int) -> float:
    for _ in range(3):
        fn()
    samples = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main(argv: list[str]) -> int:
    """Run the benchmark and print the result line.

    Args:
        argv: optional ``[N]`` (samples per side and round, default 7).

    Returns:
        0 when the ratio meets the target, 1 otherwise.
    """
    n = int(argv[0]) if argv else 7
    with tempfile.TemporaryDirectory() as tmp:
        entry = _write_pattern(Path(tmp))
        entrypoint, files = collect_files(entry)
        ctx = NativeContext(config_view=_CONFIG, entry_dir=str(entry.parent))

        def agent() -> object:
            return render_files(entrypoint, files, natives=make_natives(ctx))

        bare_natives = _bare_natives()

        def bare() -> object:
            out = _gojsonnet.evaluate_file(
                str(entry), import_callback=_bare_import, native_callbacks=bare_natives
            )
            return json.loads(out)

        assert agent() == bare(), "agent and bare renders differ"
        assert len(bare()["run"]) == COMMANDS  # type: ignore[index]
        # Interleave the two sides so machine noise hits both equally.
        agent_ms, bare_ms = [], []
        for _ in range(3):
            agent_ms.append(_median_ms(agent, n))
            bare_ms.append(_median_ms(bare, n))
    a, b = statistics.median(agent_ms), statistics.median(bare_ms)
    ratio = a / b
    verdict = "PASS" if ratio <= TARGET else "FAIL"
    print(
        f"render: agent {a:.1f} ms, bare {b:.1f} ms, ratio {ratio:.2f} "
        f"(target <= {TARGET:.2f}) {verdict}"
    )
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
