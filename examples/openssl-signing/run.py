"""openssl signing example: signingCommands build the JWT, verifyCommands check it on the host.

Usage: ``python examples/openssl-signing/run.py [work-dir]`` (default: a temporary directory).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlib


def body(argv: Sequence[str]) -> None:
    with exlib.work_dir(argv, "openssl") as work:
        exlib.copy_example("openssl-signing", work)
        tour = exlib.Tour(work)
        port = exlib.free_port()
        (work / "keys").mkdir()

        tour.step("Make Ed25519 keys with openssl", "the agent never sees the private key.")
        tour.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", "keys/signing.pem"])
        tour.run(
            ["openssl", "pkey", "-in", "keys/signing.pem", "-pubout", "-out", "keys/public.pem"]
        )
        tour.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", "keys/other.pem"])

        tour.step("Build: signingCommands sign", "agent build runs openssl pkeyutl -sign.")
        tour.run(["agent", "build", "patterns/hello.jsonnet", "hello.jwt"])
        tour.step("Verify: verifyCommands check", "agent jwt runs openssl pkeyutl -verify.")
        out = tour.run(["agent", "jwt", "hello.jwt"], quiet=True)
        tour.note(f"agent jwt hello.jwt: exit 0 ({len(out.stdout.splitlines())} lines of claims)")

        tour.step("Push to a daemon that verifies with openssl", "and signs with openssl.")
        args = ["-c", "agent.jsonnet", "-x", f"run_listenAddress=127.0.0.1:{port}", "run"]
        with exlib.daemon(tour, args, port) as d:
            push = ["agent", "push", "-h", "http://127.0.0.1", "-p", str(port), "web"]
            tour.expect(tour.run([*push, "patterns/hello.jsonnet"]), "Changed 1: hello file")
            tour.expect(tour.run([*push, "patterns/hello.jsonnet"]), "No changes")
            tour.step("A token signed by another key", "openssl -verify fails: refused, 404.")
            wrong = ["agent", "-x", "build_signingExec_env_KEY=keys/other.pem", *push[1:]]
            out = tour.run([*wrong, "patterns/hello.jsonnet"], expect_rc=1)
            tour.expect(out, "ERROR: push didn't match any sources")
            exlib.print_log(d, 0, contains=("refused",))
        tour.step("The same refusal offline", "agent jwt on a token signed by the other key.")
        wrong_build = ["agent", "-x", "build_signingExec_env_KEY=keys/other.pem", "build"]
        tour.run([*wrong_build, "patterns/hello.jsonnet", "other.jwt"], quiet=True)
        out = tour.run(["agent", "jwt", "other.jwt"], expect_rc=1, quiet=True)
        tour.note("agent jwt other.jwt: exit 1: " + out.stderr.strip().splitlines()[-1][:90] + "…")


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
