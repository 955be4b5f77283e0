"""Benchmark against peers: one 100-task local workload run by agent, ansible-core, pyinfra.

Standalone: it creates a temporary venv and installs ``ansible-core`` and ``pyinfra`` into it
with pip (from PyPI), so it is not part of ``make bench``; record its output in
``bench/peers-output.txt`` (``run_all.py`` copies that into RESULTS.md).

Workload: 100 files ``f0..f99`` in a scratch directory, each with the content ``v<i>``.

- agent: one pattern of 100 commands (``check: grep -qx v<i> f<i>``, ``change: printf``), run by
  ``agent local`` (a subprocess: Python start-up included);
- ansible-core: a ``connection: local`` playbook of 100 ``ansible.builtin.copy`` tasks with
  ``content``, ``gather_facts: false``;
- pyinfra: ``pyinfra @local deploy.py -y`` with 100 ``files.put`` operations from in-memory
  content.

Cases: cold (empty directory: every task changes) and no-op (run again: every task is already
done). Each case runs ``ROUNDS`` times per tool; the median wall time is reported. Targets on
the no-op case: agent >= 50x faster than ansible-core and >= 5x faster than pyinfra.
Usage: ``python bench/peers.py [rounds]``. Exit code 1 when a target is missed.
"""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

N = 100
ROUNDS = 3
TARGETS = {"ansible-core": 50.0, "pyinfra": 5.0}


def agent_files(work: Path, out: Path) -> list[str]:
    cmds = [
        {
            "id": f"f{i}",
            "check": f"grep -qx v{i} {out}/f{i}",
            "change": f"printf 'v{i}\\n' > {out}/f{i}",
        }
        for i in range(N)
    ]
    pattern = work / "agent.jsonnet"
    pattern.write_text(json.dumps({"run": cmds}))
    cfg = work / "agent-config.json"
    cfg.write_text("{}")
    agent = Path(sys.executable).with_name("agent")
    argv = [str(agent)] if agent.exists() else [sys.executable, "-m", "agent"]
    return [*argv, "-c", str(cfg), "-l", "error", "local", str(pattern)]


def ansible_files(work: Path, out: Path, venv: Path) -> list[str]:
    tasks = "\n".join(
        f'    - ansible.builtin.copy:\n        dest: {out}/f{i}\n        content: "v{i}\\n"\n'
        for i in range(N)
    )
    play = work / "play.yml"
    play.write_text(
        f"- hosts: localhost\n  connection: local\n  gather_facts: false\n  tasks:\n{tasks}"
    )
    return [
        str(venv / "bin" / "ansible-playbook"),
        "-i",
        "localhost,",
        "-e",
        f"ansible_python_interpreter={venv / 'bin' / 'python'}",  # no interpreter discovery
        str(play),
    ]


def pyinfra_files(work: Path, out: Path, venv: Path) -> list[str]:
    ops = "\n".join(
        f"files.put(name='f{i}', src=StringIO('v{i}\\n'), dest='{out}/f{i}')" for i in range(N)
    )
    deploy = work / "deploy.py"
    deploy.write_text(f"from io import StringIO\nfrom pyinfra.operations import files\n{ops}\n")
    return [str(venv / "bin" / "pyinfra"), "@local", str(deploy), "-y"]


def timed(argv: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"{argv[0]} failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-800:]}"
        )
    return elapsed


def check_files(out: Path) -> None:
    for i in range(N):
        if (out / f"f{i}").read_text() != f"v{i}\n":
            raise SystemExit(f"{out}/f{i}: expected v{i}")


def main(argv: list[str]) -> int:
    rounds = int(argv[0]) if argv else ROUNDS
    with tempfile.TemporaryDirectory(prefix="agent-peers-") as tmp:
        work = Path(tmp)
        venv = work / "venv"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run(
            [str(venv / "bin" / "pip"), "install", "-q", "ansible-core", "pyinfra"], check=True
        )
        versions = subprocess.run(
            [str(venv / "bin" / "pip"), "list", "--format=json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        have = {p["name"].lower(): p["version"] for p in json.loads(versions)}
        print(
            f"installed ansible-core {have.get('ansible-core')} and pyinfra {have.get('pyinfra')}"
            f" into a temporary venv in {time.perf_counter() - t0:.0f}s"
        )
        results: dict[str, dict[str, float]] = {}
        for tool in ("agent", "ansible-core", "pyinfra"):
            cold: list[float] = []
            noop: list[float] = []
            for r in range(rounds):
                out = work / f"{tool}-{r}"
                out.mkdir()
                if tool == "agent":
                    cmd = agent_files(work, out)
                elif tool == "ansible-core":
                    cmd = ansible_files(work, out, venv)
                else:
                    cmd = pyinfra_files(work, out, venv)
                cold.append(timed(cmd, work))
                check_files(out)
                noop.append(timed(cmd, work))
                check_files(out)
                shutil.rmtree(out)
            results[tool] = {"cold": statistics.median(cold), "noop": statistics.median(noop)}
            print(
                f"{tool}: cold {results[tool]['cold']:.2f}s, no-op {results[tool]['noop']:.2f}s "
                f"(median of {rounds})",
                flush=True,
            )
    ok = True
    for case in ("cold", "noop"):
        for peer in ("ansible-core", "pyinfra"):
            ratio = results[peer][case] / results["agent"][case]
            if case == "noop":
                target = TARGETS[peer]
                verdict = "PASS" if ratio >= target else "FAIL"
                ok = ok and ratio >= target
                line = f"{case} agent vs {peer}: ratio {ratio:.1f}x (target >= {target:.0f}x)"
                print(f"{line} {verdict}")
            else:
                print(f"{case} agent vs {peer}: {ratio:.1f}x faster (no target)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
