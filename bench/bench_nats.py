"""Benchmark: one NATS publish against an HTTPS fan-out, and 2,000 simulated subscribers (issue 20).

1. A real ``nats-server`` (JetStream in a temp dir) and 50 real ``agent run`` daemons on
   127.0.0.1, each with one source that has ``allowNATS`` and ``allowPush`` (TLS listener, its
   self-signed certificate). The pattern is applied once, then a no-op pattern push is timed, as
   the operator runs it (``agent push`` subprocess: start-up, build, sign, deliver, every reply):
   - ``agent push --nats --expect 50`` (one publish);
   - ``agent push`` to 50 HTTPS targets with the default ``--forks`` (``build.pushMaxWorkers``,
     the CPU count) and with ``--forks 50``.
   Median of ``ROUNDS`` (reported; the CLI times include Python start-up and imports, about
   0.2 s more for nats-py). Then the same pushes in this process, imports done
   (:func:`agent.tools.nats_push.nats_push` against :func:`agent.tools.push.push` with
   ``--forks`` = the daemon count), median of ``IN_PROCESS_ROUNDS``. Target: the NATS push takes
   at most the time of the HTTPS fan-out, in process.
2. 2,000 lightweight subscribers (not daemons: 4 processes of 500 NATS connections, each
   subscribed to ``etcha.push.sim`` and answering a fixed ``ok`` reply at once). Measured: the
   publish-to-last-reply latency in this process (median of 5), and the wall time and peak RSS
   (``ru_maxrss``) of ``agent push --nats --expect 2000``.

Usage: ``python bench/bench_nats.py [daemons] [subscribers]``. Needs /usr/sbin/nats-server.
Exit code 1 when a target is missed.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))

from nats_support import NATS_SERVER, NATSServer, host_config, wait_for_log  # noqa: E402
from support import AGENT_MODULE, RIGHT_PRIV, agent_env, write_json  # noqa: E402

ROUNDS = 3
IN_PROCESS_ROUNDS = 5
PATTERN = '{run: [{id: "noop", check: "true", change: "true"}]}'
SIM_PROCESSES = 4

SIMULATOR = r"""
import asyncio, json, sys
import nats

async def main(url, first, count):
    conns = []
    for i in range(first, first + count):
        nc = await nats.connect(servers=[url], name=f"sim{i}")
        body = json.dumps({"hostname": f"sim{i:05d}", "status": "ok", "changedIDs": None,
                           "err": ""}).encode()
        async def cb(msg, body=body):
            await msg.respond(body)
        await nc.subscribe("etcha.*.sim", cb=cb)
        conns.append(nc)
    for nc in conns:
        await nc.flush()
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


def agent(*args: str, cwd: Path) -> tuple[float, int, str]:
    """Run the CLI; (seconds, exit code, stdout)."""
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, *AGENT_MODULE, *args],
        cwd=cwd,
        env=agent_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return time.perf_counter() - start, proc.returncode, proc.stdout + proc.stderr


def agent_rss(*args: str, cwd: Path) -> tuple[float, int, int, str]:
    """Like :func:`agent`, reaping the child with wait4 to read its peak RSS (KiB)."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(
            [sys.executable, *AGENT_MODULE, *args],
            cwd=cwd,
            env=agent_env(),
            stdout=out,
            stderr=subprocess.DEVNULL,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        return elapsed, proc.returncode, usage.ru_maxrss, out.read()


def start_fleet(tmp: Path, server: NATSServer, count: int, stack: ExitStack) -> dict[str, int]:
    ports: dict[str, int] = {}
    logs = []
    for i in range(count):
        name = f"d{i:02d}"
        cfg, port = host_config(
            tmp / name,
            server.url,
            name,
            run={"tlsDisable": False},
            source_extra={"allowPush": True},
        )
        ports[name] = port
        log = tmp / name / "agent.log"
        fh = stack.enter_context(log.open("w"))
        proc = subprocess.Popen(
            [sys.executable, *AGENT_MODULE, "-c", str(cfg), "run"],
            cwd=tmp / name,
            env=agent_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
        stack.callback(_stop, proc)
        logs.append(log)
    for log in logs:
        wait_for_log(log, "NATS: connected", timeout=300)
    return ports


def _stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def in_process(client: Path, tmp: Path, daemons: int) -> tuple[float, float]:
    """Median seconds of one no-op push in this process (imports and start-up done): NATS with
    ``--expect``, and HTTPS with ``--forks`` = ``daemons``. Each call connects anew (NATS: one
    connection; HTTPS: one TLS handshake per target)."""
    from agent.config.load import config_from_dict
    from agent.tools.nats_push import NATSPushOptions, nats_push
    from agent.tools.push import PushOptions, push

    config = config_from_dict(json.loads(client.read_text()), cwd=tmp)
    spec = str(tmp / "noop.jsonnet")

    def nats_once() -> float:
        start = time.perf_counter()
        code = asyncio.run(
            nats_push(
                config,
                "web",
                spec,
                options=PushOptions(),
                nats_options=NATSPushOptions(expect=daemons),
                out=io.StringIO(),
                err=io.StringIO(),
                cwd=tmp,
            )
        )
        assert code == 0
        return time.perf_counter() - start

    def https_once() -> float:
        start = time.perf_counter()
        options = PushOptions(forks=daemons)
        out = io.StringIO()
        code = asyncio.run(push(config, "web", spec, options=options, out=out, cwd=tmp))
        assert code == 0, out.getvalue()
        return time.perf_counter() - start

    nats_once(), https_once()  # warm-up: imports, connection setup code paths
    nats_t = [nats_once() for _ in range(IN_PROCESS_ROUNDS)]
    https_t = [https_once() for _ in range(IN_PROCESS_ROUNDS)]
    return statistics.median(nats_t), statistics.median(https_t)


def fan_out(
    tmp: Path, server: NATSServer, daemons: int
) -> tuple[tuple[float, float, float], tuple[float, float]]:
    with ExitStack() as stack:
        t0 = time.perf_counter()
        ports = start_fleet(tmp, server, daemons, stack)
        print(f"started {daemons} daemons in {time.perf_counter() - t0:.1f}s", flush=True)
        targets = {
            name: {"hostname": "127.0.0.1", "port": str(port), "sourcePatterns": {"web": ""}}
            for name, port in ports.items()
        }
        client = write_json(
            tmp / "client.json",
            {
                "build": {"signingKey": RIGHT_PRIV, "tlsSkipVerify": True},
                "nats": {"servers": [server.url]},
                "targets": targets,
            },
        )
        (tmp / "noop.jsonnet").write_text(PATTERN)
        c = str(client)
        expect = ("--expect", str(daemons))
        first = agent("-c", c, "push", "--nats", *expect, "web", "noop.jsonnet", cwd=tmp)
        assert first[1] == 0, first[2]
        nats_t, https_t, https50_t = [], [], []
        for _ in range(ROUNDS):
            t, code, out = agent("-c", c, "push", "--nats", *expect, "web", "noop.jsonnet", cwd=tmp)
            assert code == 0 and f"{daemons} targets: 0 changed, {daemons} unchanged" in out, out
            nats_t.append(t)
            t, code, out = agent("-c", c, "push", "web", "noop.jsonnet", cwd=tmp)
            assert code == 0 and f"{daemons} targets: 0 changed" in out, out
            https_t.append(t)
            t, code, out = agent("-c", c, "push", "--forks", "50", "web", "noop.jsonnet", cwd=tmp)
            assert code == 0, out
            https50_t.append(t)
        cli = statistics.median(nats_t), statistics.median(https_t), statistics.median(https50_t)
        return cli, in_process(client, tmp, daemons)


async def _latency(url: str, count: int, rounds: int = 5) -> list[float]:
    import nats

    nc = await nats.connect(servers=[url])
    out = []
    try:
        for _ in range(rounds):
            inbox = nc.new_inbox()
            sub = await nc.subscribe(inbox)
            await nc.flush()
            start = time.perf_counter()
            await nc.publish("etcha.push.sim", b"token", reply=inbox)
            got = 0
            while got < count:
                msg = await sub.next_msg(timeout=60)
                if b"hostname" in msg.data:
                    got += 1
            out.append(time.perf_counter() - start)
            await sub.unsubscribe()
    finally:
        await nc.close()
    return out


def simulation(tmp: Path, server: NATSServer, count: int) -> tuple[float, float, int]:
    per = count // SIM_PROCESSES
    procs = []
    try:
        for i in range(SIM_PROCESSES):
            n = per if i < SIM_PROCESSES - 1 else count - per * (SIM_PROCESSES - 1)
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", SIMULATOR, server.url, str(i * per), str(n)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        latencies = asyncio.run(_latency(server.url, count))
        (tmp / "sim.jsonnet").write_text(PATTERN)
        client = write_json(
            tmp / "sim-client.json",
            {"build": {"signingKey": RIGHT_PRIV}, "nats": {"servers": [server.url], "stream": ""}},
        )
        wall, code, rss, out = agent_rss(
            "-c", str(client), "push", "--nats", "--expect", str(count), "sim", "sim.jsonnet",
            cwd=tmp,
        )  # fmt: skip
        assert code == 0 and f"{count} targets: 0 changed, {count} unchanged" in out, out[-500:]
        return statistics.median(latencies), wall, rss
    finally:
        for p in procs:
            if p.stdin is not None:
                p.stdin.close()
            _stop(p)


def main() -> int:
    if not NATS_SERVER.exists():
        print(f"{NATS_SERVER} is missing (apt-get install nats-server)")
        return 1
    daemons = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    subscribers = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-nats-") as d:
        tmp = Path(d)
        server = NATSServer(tmp, conf_extra="max_connections: 10000")
        server.start()
        try:
            (nats_s, https_s, https50_s), (nats_in, https_in) = fan_out(tmp, server, daemons)
            print(
                f"no-op push to {daemons} daemons, agent push CLI wall (median of {ROUNDS}): "
                f"--nats {nats_s * 1000:.0f} ms; https fan-out {https_s * 1000:.0f} ms (default "
                f"--forks = {os.cpu_count()} CPUs), {https50_s * 1000:.0f} ms (--forks {daemons})"
            )
            print(
                f"no-op push to {daemons} daemons, in process (median of {IN_PROCESS_ROUNDS}): "
                f"nats {nats_in * 1000:.0f} ms, https --forks {daemons} {https_in * 1000:.0f} ms"
            )
            for label, ratio in (
                (f"nats vs https fan-out CLI (default forks, {daemons} daemons)", nats_s / https_s),
                (f"nats vs https fan-out CLI (--forks {daemons})", nats_s / https50_s),
            ):
                print(f"{label}: {ratio:.2f}x (no target: the CLI includes start-up and imports)")
            ratio = nats_in / https_in
            verdict = "PASS" if ratio <= 1.0 else "FAIL"
            ok &= verdict == "PASS"
            print(
                f"nats vs https fan-out in process ({daemons} daemons): ratio {ratio:.2f} "
                f"(target <= 1.00) {verdict}"
            )
            latency, wall, rss = simulation(tmp, server, subscribers)
            lat_ok = "PASS" if latency <= 5.0 else "FAIL"
            rss_ok = "PASS" if rss / 1024 <= 200 else "FAIL"
            ok &= lat_ok == rss_ok == "PASS"
            print(
                f"{subscribers} subscribers publish-to-last-reply: {latency * 1000:.0f} ms "
                f"(target <= 5000 ms) {lat_ok}"
            )
            print(
                f"{subscribers} subscribers client RSS: {rss / 1024:.1f} MB (target <= 200 MB) "
                f"{rss_ok}; agent push --nats --expect {subscribers} wall {wall * 1000:.0f} ms"
            )
        finally:
            server.kill()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
