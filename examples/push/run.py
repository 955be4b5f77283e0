"""Push example: a daemon on 127.0.0.1 with TLS; push, no changes, removal, check mode.

Usage: ``python examples/push/run.py [work-dir]`` (default: a temporary directory, removed).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlib


def body(argv: Sequence[str]) -> None:
    with exlib.work_dir(argv, "push") as work:
        exlib.copy_example("push", work)
        tour = exlib.Tour(work)
        port = exlib.free_port()
        target = ["-x", f"targets_web1_port={port}"]

        tour.step("Scaffold the project", "agent init writes the standard library to lib/etcha/.")
        tour.run(["agent", "init", "."], quiet=True)
        tour.note("lib/etcha/*.libsonnet written")
        tour.step("Keys and a TLS certificate", "an Ed25519 pair, and a cert made by openssl.")
        exlib.write_keys(tour, "example")
        exlib.write_tls(tour)

        tour.step("Start the host's daemon", "source `web` accepts pushes signed by public.key.")
        args = ["-c", "agent.jsonnet", "-x", f"run_listenAddress=127.0.0.1:{port}", "run"]
        with exlib.daemon(tour, args, port):
            base = ["agent", "-c", "client.jsonnet", *target, "push"]
            push = [*base, "web"]
            tour.step("Push a pattern", "signed, sent over TLS, verified, rendered and applied.")
            out = tour.run([*push, "patterns/motd.jsonnet"])
            tour.expect(out, "web1:", "Changed 2: dir out/app, file out/app/motd")
            tour.step("Push it again", "every check passes, so nothing runs.")
            tour.expect(tour.run([*push, "patterns/motd.jsonnet"]), "No changes")
            tour.step("Push a changed pattern", "what was dropped is removed, in reverse order.")
            out = tour.run([*push, "patterns/motd-v2.jsonnet"])
            tour.expect(
                out, "Changed 1: file out/issue", "Removed 2: file out/app/motd, dir out/app"
            )
            if (work / "out" / "app").exists():
                raise exlib.StepFailed("expected out/app to be removed, it is still there")
            tour.step("Drift, seen in check mode", "someone deletes the file; -c reports only.")
            (work / "out" / "issue").unlink()
            tour.note("$ rm out/issue")
            out = tour.run([*base, "-c", "web", "patterns/motd-v2.jsonnet"])
            tour.expect(out, "Would change 1: file out/issue")
            tour.step("Correct the drift", "a normal push changes it back.")
            tour.expect(tour.run([*push, "patterns/motd-v2.jsonnet"]), "Changed 1: file out/issue")
            tour.step(
                "An ad-hoc command", "to its own source: signed like any pattern, output returned."
            )
            tour.expect(tour.run([*base, "adhoc", "echo hello from $(hostname -s)"]), "hello from")
            if not (work / "out" / "issue").exists():
                raise exlib.StepFailed("expected out/issue to stay (web's pattern), it is gone")
        tour.step("The daemon stopped cleanly", "its last accepted pattern is in state/web.jwt.")
        tour.run(["agent", "-c", "agent.jsonnet", "jwt", "state/web.jwt"], quiet=True)
        tour.note("agent jwt state/web.jwt: verified")


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
