"""Pull-over-HTTP example: a loopback web server with ETags; 200 once, then 304s, then 200.

Usage: ``python examples/pull-http/run.py [work-dir]`` (default: a temporary directory, removed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlib


def server_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("GET")]


def body(argv: Sequence[str]) -> None:
    with exlib.work_dir(argv, "pull-http") as work:
        exlib.copy_example("pull-http", work)
        tour = exlib.Tour(work)
        site = work / "site"
        site.mkdir()
        conf = work / "out" / "site.conf"

        tour.step("Scaffold the project and make keys", "lib/etcha/, signing.key, public.key.")
        tour.run(["agent", "init", "."], quiet=True)
        exlib.write_keys(tour, "example")
        tour.step("Build the pattern into the web root", "site/core.jwt, served with an ETag.")
        tour.run(["agent", "build", "patterns/site.jsonnet", "site/core.jwt"])

        tour.step("Start the web server", "serve.py: static files, ETag, 304 on If-None-Match.")
        port = exlib.free_port()
        slog = work / "server.log"
        print(f"   $ python serve.py site {port} &   # log: server.log", flush=True)
        with slog.open("w") as fh:
            server = subprocess.Popen(
                [sys.executable, "serve.py", "site", str(port)],
                cwd=work,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            exlib.wait_for("the web server", lambda: "serving" in slog.read_text())
            url = f"http://127.0.0.1:{port}/core.jwt"
            paths = json.dumps([url])
            args = ["-c", "agent.jsonnet", "-x", f"sources_core_pullPaths={paths}", "run"]
            tour.step("Start the daemon", "it pulls every second: 200 first, then 304s.")
            with exlib.daemon(tour, args, 0, ready_text="not listening") as d:
                exlib.wait_for("out/site.conf", conf.exists)
                exlib.wait_for(
                    "two 304s", lambda: server_lines(slog).count("GET /core.jwt -> 304") >= 2
                )
                for line in server_lines(slog)[:3]:
                    tour.note(f"server.log: {line}")
                tour.note(f"$ cat out/site.conf  ->  {conf.read_text().strip()}")

                tour.step(
                    "Publish version 2", "a new ETag: the next pull downloads and applies it."
                )
                before = len(server_lines(slog))
                tour.run(["agent", "build", "patterns/site-v2.jsonnet", "site/core.jwt"])
                exlib.wait_for("version 2", lambda: conf.read_text() == "version = 2\n")
                exlib.wait_for(
                    "a 304 again",
                    lambda: server_lines(slog)[before:].count("GET /core.jwt -> 304") >= 1,
                )
                new = server_lines(slog)[before:]
                if "GET /core.jwt -> 200" not in new:
                    raise exlib.StepFailed(f"expected a 200 for the new version, got {new}")
                first = new.index("GET /core.jwt -> 200")
                for line in new[max(0, first - 1) : first + 2]:
                    tour.note(f"server.log: {line}")
                tour.note(f"$ cat out/site.conf  ->  {conf.read_text().strip()}")
                exlib.print_log(d, 0, contains=("pulled", "Changed"))
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
