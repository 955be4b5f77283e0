"""Pull-from-file example: build into a file, the daemon pulls and applies it, then a new build.

Usage: ``python examples/pull-file/run.py [work-dir]`` (default: a temporary directory, removed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlib


def body(argv: Sequence[str]) -> None:
    with exlib.work_dir(argv, "pull-file") as work:
        exlib.copy_example("pull-file", work)
        tour = exlib.Tour(work)
        out = work / "out" / "etc"

        tour.step("Scaffold the project and make keys", "lib/etcha/, signing.key, public.key.")
        tour.run(["agent", "init", "."], quiet=True)
        exlib.write_keys(tour, "example")

        tour.step("Build the pattern into the pull path", "agent build signs it into a JWT.")
        (work / "dist").mkdir()
        tour.run(["agent", "build", "patterns/app.jsonnet", "dist/core.jwt"])
        proc = tour.run(["agent", "-c", "agent.jsonnet", "jwt", "dist/core.jwt"], quiet=True)
        tour.note(
            f"agent jwt dist/core.jwt: verified ({len(proc.stdout.splitlines())} lines of claims)"
        )

        tour.step("Start the daemon", "it pulls dist/core.jwt, verifies it and applies it.")
        args = ["-c", "agent.jsonnet", "run"]
        with exlib.daemon(tour, args, 0, ready_text="not listening") as d:
            exlib.wait_for("out/etc/app.conf", (out / "app.conf").exists)
            mark = exlib.print_log(d, 0, contains=("core",))
            tour.note("$ cat out/etc/app.conf")
            for line in (out / "app.conf").read_text().splitlines():
                tour.note(f"  {line}")

            tour.step("Build a new version", "the next pull sees a new pattern and diffs it.")
            tour.run(["agent", "build", "patterns/app-v2.jsonnet", "dist/core.jwt"])
            exlib.wait_for("out/etc/app2.conf", (out / "app2.conf").exists)
            exlib.wait_for("out/etc/app.conf removed", lambda: not (out / "app.conf").exists())
            exlib.wait_for("the new state saved", lambda: "Saving" in "".join(d.log_lines()[mark:]))
            mark = exlib.print_log(d, mark, contains=("core",))
            tour.note("$ ls out/etc")
            tour.note("  " + " ".join(sorted(p.name for p in out.iterdir())))

            tour.step("Drift is corrected on the next tick", "someone deletes the file.")
            (out / "app2.conf").unlink()
            tour.note("$ rm out/etc/app2.conf")
            exlib.wait_for("out/etc/app2.conf back", (out / "app2.conf").exists)
            exlib.print_log(d, mark, contains=("Changed",))

        tour.step("Or run from cron / a systemd timer", "run -o: every source once, no daemon.")
        tour.run(["agent", "-c", "agent.jsonnet", "run", "-o"])


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
