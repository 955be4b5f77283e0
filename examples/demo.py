"""``make demo``: a guided tour of the agent on a real daemon on 127.0.0.1.

Keys → TLS certificate → ``agent run`` → build → push (changed, then no changes) → removal by a
changed pattern → pull from a file → an event → a webhook answered to curl → metrics → clean stop.
Everything happens in a temporary directory that is removed at the end; the daemon runs in its
own process group and is stopped (SIGTERM, then SIGKILL of the group) even when a step fails.
Stdlib and the installed agent only. Usage: ``python examples/demo.py [work-dir]``.
"""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import exlib

CONFIG = """\
// The demo host: one daemon, four sources.
local events = import 'events.jsonnet';  // handler: triggered by the `deploy` event or a webhook

{
  run: {
    stateDir: 'state',
    verifyKeys: [importstr 'public.key'],
    tlsCertificatePath: 'tls/cert.pem',  // made by openssl; clients trust it as their CA
    tlsKeyPath: 'tls/key.pem',
    systemMetricsKey: importstr 'metrics.key',
  },
  sources: {
    web: { allowPush: true },                                    // receives pushes
    core: { pullPaths: ['dist/core.jwt'], runFrequency: '1s' },  // pulls a file
    app: { allowPush: true, eventsSend: '.*' },                  // may fire events
    handler: events.sources.handler,
  },
}
"""

CLIENT = """\
{
  build: { signingKeyPath: 'signing.key' },
  httpClient: { caFile: 'tls/cert.pem' },
  targets: { demo: { hostname: '127.0.0.1', sourcePatterns: { web: '', app: '' } } },
}
"""

CORE = """\
local etcha = import '../lib/etcha/etcha.libsonnet';

{ run: [etcha.dir(path='out/core'), etcha.file(path='out/core/pulled.txt', contents='pulled\\n')] }
"""


def setup(work: Path) -> None:
    ex = exlib.EXAMPLES
    (work / "patterns").mkdir()
    for name in ("motd.jsonnet", "motd-v2.jsonnet"):
        shutil.copy2(ex / "push" / "patterns" / name, work / "patterns" / name)
    shutil.copy2(ex / "events-webhooks" / "patterns" / "release.jsonnet", work / "patterns")
    shutil.copy2(ex / "events-webhooks" / "agent.jsonnet", work / "events.jsonnet")
    (work / "patterns" / "core.jsonnet").write_text(CORE)
    (work / "agent.jsonnet").write_text(CONFIG)
    (work / "client.jsonnet").write_text(CLIENT)
    (work / "metrics.key").write_text(secrets.token_urlsafe(16))
    (work / "dist").mkdir()


def body(argv: Sequence[str]) -> None:
    started = time.monotonic()
    with exlib.work_dir(argv, "demo") as work:
        print(f"agent demo: a real daemon on 127.0.0.1, everything in {work}")
        setup(work)
        tour = exlib.Tour(work)
        port = exlib.free_port()
        base = f"https://127.0.0.1:{port}"
        cacert = ["--cacert", "tls/cert.pem"]

        tour.step("Scaffold a project", "agent init writes the standard library to lib/etcha/.")
        tour.run(["agent", "init", "."], quiet=True)
        tour.note("lib/etcha/*.libsonnet, patterns/ (demo patterns copied from examples/)")

        tour.step("Generate a signing key pair", "Ed25519; the host trusts only public.key.")
        exlib.write_keys(tour, "demo")

        tour.step(
            "Make a TLS certificate with openssl",
            "the daemon serves it; agent push and curl trust it as their CA (verification on).",
        )
        exlib.write_tls(tour)

        tour.step("Build the pattern the host will pull", "signed into dist/core.jwt.")
        tour.run(
            ["agent", "-c", "client.jsonnet", "build", "patterns/core.jsonnet", "dist/core.jwt"]
        )

        tour.step("Start the daemon", "sources: web (push), core (pull), app + handler (events).")
        args = ["-c", "agent.jsonnet", "-x", f"run_listenAddress=127.0.0.1:{port}", "run"]
        with exlib.daemon(tour, args, port) as d:
            mark = exlib.print_log(d, 0, contains=("Starting listener",))

            tour.step("Pull from a file", "at start-up core pulled dist/core.jwt and applied it.")
            pulled = work / "out" / "core" / "pulled.txt"
            exlib.wait_for("out/core/pulled.txt", pulled.exists)
            mark = exlib.print_log(d, 0, contains=("core",))

            push = ["agent", "-c", "client.jsonnet", "-x", f"targets_demo_port={port}", "push"]
            tour.step("Push a pattern", "built, signed, sent over TLS, verified and applied.")
            out = tour.run([*push, "web", "patterns/motd.jsonnet"])
            tour.expect(out, "Changed 2: dir out/app, file out/app/motd")

            tour.step("Push it again", "all checks pass: nothing runs.")
            tour.expect(tour.run([*push, "web", "patterns/motd.jsonnet"]), "No changes")

            tour.step("Push a changed pattern", "what the new version dropped is removed.")
            out = tour.run([*push, "web", "patterns/motd-v2.jsonnet"])
            tour.expect(
                out, "Changed 1: file out/issue", "Removed 2: file out/app/motd, dir out/app"
            )

            tour.step("An event", "app's pattern fires `deploy`; the handler source receives it.")
            tour.expect(tour.run([*push, "app", "patterns/release.jsonnet"]), "Changed 1: release")
            triggers = work / "out" / "triggers.log"
            exlib.wait_for("out/triggers.log", triggers.exists)
            tour.run(["cat", "out/triggers.log"])

            tour.step("A webhook answered to curl", "handler's webhookBody output is the reply.")
            out = tour.run(
                [
                    "curl",
                    "-sS",
                    *cacert,
                    "-X",
                    "POST",
                    "-d",
                    "some data",
                    "-H",
                    "x-my-header: hello",
                    f"{base}/hooks/deploy",
                ]
            )
            tour.expect(out, "method=POST path=/hooks/deploy", "body=some data")

            tour.step("Metrics", "Prometheus text; a few etcha_ lines.")
            key = (work / "metrics.key").read_text()
            out = tour.run(
                ["curl", "-sS", *cacert, f"{base}/etcha/v1/system/metrics?key={key}"],
                show=f"curl -sS --cacert tls/cert.pem '{base}/etcha/v1/system/metrics?key=…' "
                "| grep '^etcha_sources_total'",
                quiet=True,
            )
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("etcha_sources_total")]
            if not lines:
                raise exlib.StepFailed("expected etcha_sources_total lines in the metrics")
            for line in lines:
                tour.note(f"  {line}")

            tour.step("Stop the daemon", "SIGTERM: it stops listening, finishes runs, exits 0.")
            tour.note(f"$ kill -TERM {d.proc.pid}")
            rc = exlib.stop_daemon(d)
            exlib.print_log(d, mark, contains=("SIGTERM", "Stopping", "Stopped"))
            if rc != 0:
                raise exlib.StepFailed(f"expected agent run to exit 0 on SIGTERM, got {rc}")
            tour.note("exit code 0; state/ holds each source's last accepted pattern:")
            tour.note("  " + " ".join(sorted(p.name for p in (work / "state").glob("*.jwt"))))
        print(f"\nThe demo took {time.monotonic() - started:.1f}s; nothing is left running.")


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
