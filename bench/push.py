"""Benchmark: push round-trip against `agent local`, and idle daemon memory.

1. A real ``agent run`` daemon on 127.0.0.1 (TLS, the default; ``--http`` for plain HTTP) with one
   push source. A 10-command no-op pattern (every check passes) is signed once; each round POSTs
   the token to ``/etcha/v1/push/core`` over a kept-alive connection and waits for the Result.
   That is: verify, render (Jsonnet), diff, 10 checks, HTTP.
2. The same 10 commands through ``agent local`` (a subprocess, as a user runs it: includes Python
   start-up), and through :func:`agent.run.engine.run_commands` in this process (the pure command
   cost, no start-up).
3. Idle RSS (``VmRSS`` from ``/proc/<pid>/status``) of a daemon with 3 sources configured
   (static commands, a push source and a file pull source), after its start-up runs.

Target: push p50 <= max(1.5 x local p50, local p50 + 50 ms). It is reported against both local
measures; the verdict uses the in-process engine time (the stricter one). RSS target: <= 60 MB.
Usage: ``python bench/push.py [rounds] [--http]``. Exit code 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.config.schema import config_from_dict  # noqa: E402
from agent.pattern.load import load_from_disk  # noqa: E402
from agent.run.engine import Mode, run_commands  # noqa: E402
from agent.tools.build import build_token  # noqa: E402

PRIV = "ed25519private:MC4CAQAwBQYDK2VwBCIEIBq+BhDRYk8OJv1ksMwKtf0td5p3FGwypXq96gHKefGS:reqYEklgP4"
PUB = "ed25519public:MCowBQYDK2VwAyEAw7eTEuEH0+TfgtX3zB+JZVnYD0eskY6qn3n7ZCA7wWM=:reqYEklgP4"
ROUNDS = 30
N = 10
RSS_TARGET_MB = 60.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pattern_text() -> str:
    cmds = [f"{{id: 'noop{i}', check: 'test -d /tmp # {i}', change: 'true'}}" for i in range(N)]
    return "{run: [" + ", ".join(cmds) + "]}\n"


def start_daemon(tmp: Path, cfg: dict[str, Any], name: str) -> subprocess.Popen[bytes]:
    path = tmp / f"{name}.json"
    path.write_text(json.dumps(cfg))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = (tmp / f"{name}.log").open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "agent", "-c", str(path), "-l", "error", "run"],
        cwd=tmp,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"daemon exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit("daemon did not start listening")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def push_rounds(url: str, token: str, rounds: int, tls: bool) -> list[float]:
    import aiohttp

    times: list[float] = []
    connector = aiohttp.TCPConnector(ssl=False if tls else None)
    async with aiohttp.ClientSession(connector=connector) as session:
        for i in range(rounds + 2):
            start = time.perf_counter()
            async with session.post(url, data=token) as resp:
                body = await resp.json()
                if resp.status != 200 or body["changedIDs"]:
                    raise SystemExit(f"unexpected push answer {resp.status}: {body}")
            if i >= 2:  # the first rounds warm up the connection and caches
                times.append(time.perf_counter() - start)
    return times


def local_rounds(tmp: Path, pattern: Path, rounds: int) -> list[float]:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    cfg = tmp / "local.json"
    cfg.write_text("{}")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "agent", "-c", str(cfg), "-l", "error", "local", str(pattern)],
            cwd=tmp,
            env=env,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - start)
    return times


async def engine_rounds(pattern: Path, rounds: int) -> list[float]:
    cfg = config_from_dict({})
    loaded = load_from_disk(pattern, config=cfg, source="bench")
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        outcome = await run_commands(
            loaded.pattern.run, exec=loaded.run_exec, mode=Mode.CHANGE, parent_id="bench"
        )
        if outcome.error is not None:
            raise SystemExit(f"engine run failed: {outcome.error}")
        times.append(time.perf_counter() - start)
    return times


def ms(values: list[float]) -> float:
    return statistics.median(values) * 1000


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv and argv[0].isdigit() else ROUNDS
    tls = "--http" not in argv
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-push-") as d:
        tmp = Path(d)
        pattern = tmp / "noop.jsonnet"
        pattern.write_text(pattern_text())
        signer = config_from_dict({"build": {"signingKey": PRIV}})
        token = asyncio.run(
            build_token(load_from_disk(pattern, config=signer, source=""), config=signer)
        )

        port = free_port()
        proc = start_daemon(
            tmp,
            {
                "run": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "stateDir": str(tmp / "state"),
                    "verifyKeys": [PUB],
                    "tlsDisable": not tls,
                },
                "sources": {"core": {"allowPush": True}},
            },
            "push",
        )
        try:
            wait_port(port, proc)
            scheme = "https" if tls else "http"
            url = f"{scheme}://127.0.0.1:{port}/etcha/v1/push/core"
            push_t = asyncio.run(push_rounds(url, token, rounds, tls))
        finally:
            stop(proc)
        local_t = local_rounds(tmp, pattern, max(5, rounds // 3))
        engine_t = asyncio.run(engine_rounds(pattern, rounds))

        push_ms, local_ms, engine_ms = ms(push_t), ms(local_t), ms(engine_t)
        limit = max(1.5 * engine_ms, engine_ms + 50.0)
        verdict = push_ms <= limit
        ok = ok and verdict
        print(f"push round-trip ({scheme}, {N} no-op commands): p50 {push_ms:.1f} ms")
        print(f"agent local (subprocess, incl. start-up): p50 {local_ms:.1f} ms")
        print(f"engine.run_commands (in-process): p50 {engine_ms:.1f} ms")
        print(
            f"push vs agent local: {push_ms / local_ms:.2f}x; "
            f"push overhead over in-process commands: {push_ms - engine_ms:+.1f} ms "
            f"(target <= {limit:.1f} ms): {'OK' if verdict else 'MISSED'}"
        )

        # Idle RSS with 3 sources.
        pull = tmp / "pull.jwt"
        pull.write_text(token)
        port = free_port()
        proc = start_daemon(
            tmp,
            {
                "run": {
                    "listenAddress": f"127.0.0.1:{port}",
                    "stateDir": str(tmp / "state3"),
                    "verifyKeys": [PUB],
                    "tlsDisable": not tls,
                },
                "sources": {
                    "static": {"commands": [{"id": "s", "check": "true", "change": "true"}]},
                    "pushed": {"allowPush": True},
                    "pulled": {"pullPaths": [str(pull)], "runFrequency": "5m"},
                },
            },
            "idle",
        )
        try:
            wait_port(port, proc)
            time.sleep(2.0)
            rss = rss_mb(proc.pid)
        finally:
            stop(proc)
        rss_ok = rss <= RSS_TARGET_MB
        ok = ok and rss_ok
        print(
            f"idle daemon RSS with 3 sources: {rss:.1f} MB "
            f"(target <= {RSS_TARGET_MB:.0f} MB): {'OK' if rss_ok else 'MISSED'}"
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
