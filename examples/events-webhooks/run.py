"""Events and webhooks example: a push fires an event; curl calls a webhook; metrics.

Usage: ``python examples/events-webhooks/run.py [work-dir]`` (default: a temporary directory).
"""

from __future__ import annotations

import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import exlib


def body(argv: Sequence[str]) -> None:
    with exlib.work_dir(argv, "events") as work:
        exlib.copy_example("events-webhooks", work)
        tour = exlib.Tour(work)
        port = exlib.free_port()
        base = f"https://127.0.0.1:{port}"
        triggers = work / "out" / "triggers.log"

        tour.step("Keys, a TLS certificate and a metrics key", "all made for this run.")
        exlib.write_keys(tour, "example")
        exlib.write_tls(tour)
        (work / "metrics.key").write_text(secrets.token_urlsafe(16))

        tour.step("Start the daemon", "sources: app (push, sends events), handler (triggered).")
        args = ["-c", "agent.jsonnet", "-x", f"run_listenAddress=127.0.0.1:{port}", "run"]
        with exlib.daemon(tour, args, port):
            if triggers.exists():
                raise exlib.StepFailed("expected the triggerOnly handler not to run at start-up")
            tour.step("Push a pattern that fires `deploy`", "the handler receives the event.")
            out = tour.run(
                [
                    "agent",
                    "-c",
                    "client.jsonnet",
                    "-x",
                    f"targets_host1_port={port}",
                    "push",
                    "app",
                    "patterns/release.jsonnet",
                ]
            )
            tour.expect(out, "Changed 1: release")
            exlib.wait_for("out/triggers.log", triggers.exists)
            tour.run(["cat", "out/triggers.log"])
            if (
                "trigger=event event=deploy output=release 42 key=example"
                not in triggers.read_text()
            ):
                raise exlib.StepFailed(f"expected the deploy event, got {triggers.read_text()!r}")

            tour.step("Call the webhook with curl", "the handler runs; its webhookBody answers.")
            curl = [
                "curl",
                "-sS",
                "-i",
                "--cacert",
                "tls/cert.pem",
                "-X",
                "POST",
                "-d",
                "some data",
                "-H",
                "x-my-header: hello",
                f"{base}/hooks/deploy?from=curl",
            ]
            out = tour.run(curl)
            tour.expect(
                out, "method=POST path=/hooks/deploy", "body=some data", "X-My-Header: hello"
            )
            tour.expect(out, "HTTP/1.1 200", "text/plain")
            tour.run(["tail", "-n", "1", "out/triggers.log"])
            tour.step("An unknown path", "no source answers it: 404.")
            tour.expect(
                tour.run(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}\\n",
                        "--cacert",
                        "tls/cert.pem",
                        f"{base}/hooks/nothing",
                    ]
                ),
                "404",
            )

            tour.step("Metrics", "Prometheus text at /etcha/v1/system/metrics?key=<metrics.key>.")
            key = (work / "metrics.key").read_text()
            out = tour.run(
                [
                    "curl",
                    "-sS",
                    "--cacert",
                    "tls/cert.pem",
                    f"{base}/etcha/v1/system/metrics?key={key}",
                ],
                show=f"curl -sS --cacert tls/cert.pem '{base}/etcha/v1/system/metrics?key=…' "
                "| grep '^etcha_sources_total'",
                quiet=True,
            )
            lines = [ln for ln in out.stdout.splitlines() if ln.startswith("etcha_sources_total")]
            for line in lines:
                tour.note(f"  {line}")
            if not any('name="handler"' in ln and 'trigger="webhook"' in ln for ln in lines):
                raise exlib.StepFailed("expected an etcha_sources_total line for the webhook run")
            tour.expect(
                tour.run(
                    [
                        "curl",
                        "-sS",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}\\n",
                        "--cacert",
                        "tls/cert.pem",
                        f"{base}/etcha/v1/system/metrics?key=wrong",
                    ]
                ),
                "401",
            )


if __name__ == "__main__":
    sys.exit(exlib.main_wrapper(body))
