"""Run every benchmark under bench/ (except peers.py) and write bench/RESULTS.md.

Each benchmark is run as its own subprocess with this Python; its printed lines are parsed (the
benchmarks are not changed for this): a line with ``ratio X (target <= Y)``, ``ratio X (target
>= Y)``, ``Xx (target <= Y)`` or ``X ms (target <= Y ms)`` / ``X MB (target <= Y MB)`` becomes a
row with the measured value, its target and the verdict the benchmark printed. The machine
(CPU model, logical CPUs, memory, OS, Python) and the date head the report. ``bench/peers.py``
installs ansible-core and pyinfra from PyPI, so it is run on its own; its last recorded output,
kept in ``bench/peers-output.txt`` when present, is appended.

Usage: ``python bench/run_all.py``. Exit code 1 when a benchmark fails or misses a target.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
SKIP = {"run_all.py", "peers.py"}

FLOOR = re.compile(r"\bfloor (?P<floor>[^,;]+)")
ROW = re.compile(
    r"^(?P<name>[^:]+):.*?"
    r"(?:ratio (?P<ratio>[\d.]+)x?|(?P<value>[+-]?[\d.]+) ?(?P<unit>ms|MiB|MB)) "
    r"\(target (?P<op><=|>=) (?P<target>[\d.]+ ?(?:x|ms|MiB|MB)?)\)"
)


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    return [
        f"- Machine: {cpu}, {os.cpu_count()} logical CPUs{mem}",
        f"- OS: {platform.platform()}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        f"- Date: {dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def rows_from(script: str, text: str) -> list[str]:
    rows = []
    for line in text.splitlines():
        m = ROW.search(line)
        if not m:
            continue
        measured = f"{m['ratio']}" if m["ratio"] else f"{m['value']} {m['unit']}"
        verdict = "PASS" if re.search(r"\b(PASS|OK)\b", line) else "FAIL"
        name = m["name"].strip()
        floor = FLOOR.search(line)
        floor_text = floor["floor"].strip() if floor else ""
        rows.append(
            f"| {script} | {name} | {measured} | {floor_text} | {m['op']} {m['target']} "
            f"| {verdict} |"
        )
        print(
            f"  {name}: {measured}, floor {floor_text or '-'}, target {m['op']} {m['target']}: "
            f"{verdict}"
        )
    return rows


def main() -> int:
    scripts = sorted(p for p in BENCH.glob("*.py") if p.name not in SKIP)
    table = [
        "| bench | measure | measured | floor (same run) | target | verdict |",
        "|---|---|---|---|---|---|",
    ]
    outputs: list[str] = []
    ok = True
    for script in scripts:
        print(f"== {script.name}", flush=True)
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=900, check=False
        )
        text = proc.stdout + proc.stderr
        print(text, end="", flush=True)
        rows = rows_from(script.name, proc.stdout)
        if proc.returncode != 0 or not rows:
            ok = False
        if not rows:
            table.append(
                f"| {script.name} | (no result line; exit {proc.returncode}) | | | | FAIL |"
            )
        table.extend(rows)
        outputs += [
            f"### {script.name} (exit {proc.returncode})",
            "",
            "```",
            text.rstrip(),
            "```",
            "",
        ]
    peers = BENCH / "peers-output.txt"
    if peers.exists():
        table.extend(rows_from("peers.py (recorded)", peers.read_text()))
    report = [
        "# Benchmark results",
        "",
        "<!-- Written by `make bench` (bench/run_all.py); do not edit by hand. -->",
        "",
        *machine(),
        "",
        "## Ratios and targets",
        "",
        *table,
        "",
        "## Output",
        "",
        *outputs,
    ]
    if peers.exists():
        report += [
            "## Peers (bench/peers.py, run on its own; recorded output)",
            "",
            "```",
            peers.read_text().rstrip(),
            "```",
            "",
        ]
    (BENCH / "RESULTS.md").write_text("\n".join(report))
    print(f"wrote {BENCH / 'RESULTS.md'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
