"""Benchmark: the cost of the audit log (issue 18) on the push benchmark, and its fsync groups.

1. The push benchmark of ``bench/push.py`` (a real daemon, plain HTTP, a 10-command no-op pattern,
   sequential pushes over one kept-alive connection) with ``run.audit`` off and on: p50 and p95
   round-trip. Each push with the log on writes an ``admit`` and a ``run`` line, and the reply
   waits for the ``run`` line's fsync.
2. 50 concurrent pushes, log off and on: wall time and the number of lines per fsync (the group
   commit of :mod:`agent.daemon.audit`: lines within a few milliseconds share one fsync).
3. The writer alone, in this process: 500 lines with one fsync each (``record`` without a loop),
   500 lines from concurrent ``arecord`` calls (grouped), and the same lines without fsync.

Target: the log adds at most :data:`TARGET_MS` to the push p50, against the p50 with the log off
measured in the same run (the floor): one fsync plus the group window, on an ordinary disk.
Usage: ``python bench/bench_audit.py [rounds]``; exit 1 on a miss.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(BENCH.parent))

import push as push_bench  # noqa: E402

from agent.config.schema import config_from_dict  # noqa: E402
from agent.daemon.audit import AuditLog  # noqa: E402
from agent.jws.audit import load_or_create_key  # noqa: E402
from agent.pattern.load import load_from_disk  # noqa: E402
from agent.tools.build import build_token  # noqa: E402

ROUNDS = 40
#: Milliseconds the audit log may add to the push p50 (one fsync and the group window).
TARGET_MS = 10.0
CONCURRENT = 50
LINES = 500


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def concurrent_pushes(url: str, tokens: list[str]) -> float:
    import aiohttp

    async with aiohttp.ClientSession() as session:

        async def one(token: str) -> None:
            async with session.post(url, data=token) as resp:
                if resp.status != 200:
                    raise SystemExit(f"push answered {resp.status}")
                await resp.read()

        start = time.perf_counter()
        await asyncio.gather(*(one(t) for t in tokens))
        return time.perf_counter() - start


def daemon_run(
    tmp: Path, audit: bool, token: str, tokens: list[str], rounds: int
) -> dict[str, Any]:
    port = push_bench.free_port()
    state = tmp / f"state-{audit}"
    cfg = {
        "run": {
            "listenAddress": f"127.0.0.1:{port}",
            "stateDir": str(state),
            "verifyKeys": [push_bench.PUB],
            "tlsDisable": True,
            "audit": audit,
            "maxConnectionsPerAddress": 128,
        },
        "sources": {"core": {"allowPush": True}},
    }
    proc = push_bench.start_daemon(tmp, cfg, f"audit-{audit}")
    try:
        push_bench.wait_port(port, proc)
        url = f"http://127.0.0.1:{port}/etcha/v1/push/core"
        times = asyncio.run(push_bench.push_rounds(url, token, rounds, False))
        wall = asyncio.run(concurrent_pushes(url, tokens))
    finally:
        push_bench.stop(proc)
    lines = 0
    if audit:
        lines = sum(len(p.read_text().splitlines()) for p in (state / "audit").glob("audit*.jsonl"))
    return {"p50": pct(times, 0.5), "p95": pct(times, 0.95), "wall": wall * 1000, "lines": lines}


def writer_bench(tmp: Path) -> None:
    fsyncs = [0]
    real = os.fsync

    def counting(fd: int) -> None:
        fsyncs[0] += 1
        real(fd)

    os.fsync = counting  # type: ignore[assignment]
    try:
        for name, mode in (("one fsync per line", "sync"), ("grouped (async)", "async")):
            log = AuditLog(tmp / name.replace(" ", "-"), key=lambda: load_or_create_key(tmp))
            log.open()
            fsyncs[0] = 0
            start = time.perf_counter()
            if mode == "sync":
                for i in range(LINES):
                    log.record("bench", i=i, source="core")
            else:

                async def many(log: AuditLog = log) -> None:
                    await asyncio.gather(*(log.arecord("bench", i=i) for i in range(LINES)))

                asyncio.run(many())
            took = (time.perf_counter() - start) * 1000
            print(
                f"writer, {name}: {LINES} lines in {took:.1f} ms "
                f"({took / LINES * 1000:.0f} us/line), {fsyncs[0]} fsyncs"
            )
            log.close()
        log = AuditLog(tmp / "nosync", key=lambda: load_or_create_key(tmp), window=0)
        log.open()
        log.sync = lambda upto=None: None  # type: ignore[method-assign]
        start = time.perf_counter()
        for i in range(LINES):
            log.record("bench", i=i, source="core")
        took = (time.perf_counter() - start) * 1000
        print(
            f"writer, no fsync (floor): {LINES} lines in {took:.1f} ms "
            f"({took / LINES * 1000:.0f} us/line)"
        )
    finally:
        os.fsync = real


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv and argv[0].isdigit() else ROUNDS
    with tempfile.TemporaryDirectory(prefix="bench-audit-") as d:
        tmp = Path(d)
        pattern = tmp / "noop.jsonnet"
        pattern.write_text(push_bench.pattern_text())
        signer = config_from_dict({"build": {"signingKey": push_bench.PRIV}})
        loaded = load_from_disk(pattern, config=signer, source="")
        token = asyncio.run(build_token(loaded, config=signer))
        tokens = [asyncio.run(build_token(loaded, config=signer)) for _ in range(CONCURRENT)]
        off = daemon_run(tmp, False, token, tokens, rounds)
        on = daemon_run(tmp, True, token, tokens, rounds)
        print(f"push round-trip, audit off: p50 {off['p50']:.1f} ms, p95 {off['p95']:.1f} ms")
        print(f"push round-trip, audit on:  p50 {on['p50']:.1f} ms, p95 {on['p95']:.1f} ms")
        print(
            f"{CONCURRENT} concurrent pushes: audit off {off['wall']:.0f} ms, "
            f"on {on['wall']:.0f} ms "
            f"({on['lines']} audit lines written in all)"
        )
        writer_bench(tmp)
        print(f"median of the two p50s: {statistics.median([off['p50'], on['p50']]):.1f} ms")
    cost = on["p50"] - off["p50"]
    verdict = "PASS" if cost <= TARGET_MS else "FAIL"
    print(
        f"audit cost per push: {cost:.1f} ms (target <= {TARGET_MS:.0f} ms), "
        f"floor {off['p50']:.1f} ms (audit off); {verdict}"
    )
    return 0 if cost <= TARGET_MS else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
