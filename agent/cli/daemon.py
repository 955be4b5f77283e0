"""Registrar for the daemon subcommands: ``run`` (the agent daemon), ``push`` (its client) and
``fingerprint`` (the daemon's certificate, for clients to pin)."""

from __future__ import annotations

import argparse

from agent.cli.flags import FINGERPRINT_HELP, add_target_flags

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add ``run``, ``push``, ``shell`` and ``fingerprint`` to ``sub`` (argparse subparsers)."""
    _register_run(sub)
    _register_push(sub)
    _register_shell(sub)
    _register_fingerprint(sub)


def _register_run(sub: Any) -> None:
    """``run``."""
    p = sub.add_parser(
        "run",
        help="run sources: restore, pull, listen for pushes",
        description="Restore and re-verify each source's state, run it, pull on runFrequency and "
        "listen for pushes on run.listenAddress (HTTPS unless run.tlsDisable). "
        "SIGTERM/SIGINT stop cleanly; SIGHUP re-reads the config.",
    )
    p.add_argument(
        "-o",
        dest="once",
        action="store_true",
        help="run every source once, no listener; exit 1 if any source failed",
    )
    p.add_argument(
        "-v", dest="verbose", action="store_true", help="log each command's output under its id"
    )
    p.set_defaults(handler="agent.cli.daemon_cmds:cmd_run")


def _register_push(sub: Any) -> None:
    """``push``."""
    p = sub.add_parser(
        "push",
        help="build, sign and push a pattern or command to targets",
        description="Pushes to every config target whose sourcePatterns lists SOURCE (or to -h). "
        "A value ending in .jsonnet is a pattern path; anything else is a command run with "
        "always: true. Use -h http://HOST for a daemon with run.tlsDisable. "
        "Each target's result prints as soon as that target finishes (with the global flag, "
        "`agent -f json push …`, one JSON object per line; push's own -f is the parent-id "
        "filter), and a recap line ends the output: "
        "`5 targets: 2 changed, 1 unchanged, 1 failed, 1 unreachable`. A target that gives no "
        "HTTP answer (refused, timed out) is UNREACHABLE; one that answers with an error, or "
        "whose certificate is not trusted, is failed. "
        "Exit codes: 0 when no target failed or was unreachable; 1 when any did; 2 with "
        "--detailed-exitcode when none failed but something changed (or, with -c, would "
        "change); 2 is also a usage error, as for every command.",
        add_help=False,  # -h is the host, as in Etcha
    )
    add_target_flags(
        p,
        host_help="push to this host only (https; http://HOST for plain HTTP)",
        path_help="push path (default /etcha/v1/push)",
        fingerprint_help=FINGERPRINT_HELP + "; no CA or tlsSkipVerify needed",
    )
    p.add_argument("-c", dest="check", action="store_true", help="check mode: report drift only")
    p.add_argument("-f", dest="filter", default="", metavar="REGEX", help="parent-id filter")
    p.add_argument(
        "-n", dest="target_filter", default=None, metavar="REGEX", help="target name filter"
    )
    _push_fleet_flags(p)
    _push_nats_flags(p)
    p.add_argument("source", help="source name on the targets")
    p.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        metavar="pattern.jsonnet | command",
        help="pattern path, or a command (the rest of the line)",
    )
    p.set_defaults(handler="agent.cli.push_cmds:cmd_push")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return value


def _push_fleet_flags(p: argparse.ArgumentParser) -> None:
    """``push``: the per-target timeout, concurrency, batches and exit codes."""
    p.add_argument(
        "--timeout",
        dest="timeout",
        default=None,
        metavar="DURATION",
        help="time limit per target: connect, TLS handshake and answer (default "
        "build.pushTimeout, 2m; 0 = none); a target that hits it is UNREACHABLE",
    )
    p.add_argument(
        "--forks",
        "-j",
        dest="forks",
        type=_positive_int,
        default=None,
        metavar="N",
        help="push to N targets at once (default build.pushMaxWorkers)",
    )
    p.add_argument(
        "--serial",
        dest="serial",
        type=_positive_int,
        default=None,
        metavar="N",
        help="push in batches of N targets, in name order, and stop after a batch with a "
        "failed or unreachable target; the rest are reported as skipped",
    )
    p.add_argument(
        "-v", dest="verbose", action="store_true", help="print each command's output under its id"
    )
    p.add_argument(
        "--detailed-exitcode",
        dest="detailed_exitcode",
        action="store_true",
        help="exit 2 when no target failed but something changed (or would change with -c)",
    )


def _register_shell(sub: Any) -> None:
    """``shell``."""
    p = sub.add_parser(
        "shell",
        help="open an interactive shell on a target over its push listener",
        description="Opens a terminal on TARGET (a name from targets, or -h HOST) for SOURCE, "
        "whose sources.<name>.shell must be set there. Every request is signed like a push "
        "(Etcha's protocol). The local terminal is in raw mode until the session ends and is "
        "restored on every exit; piped stdin is sent one line at a time. Exit 0 when the "
        "remote shell ended, 1 when the session could not start or the connection broke, 130 when "
        "interrupted.",
        add_help=False,  # -h is the host, as for push
    )
    add_target_flags(
        p,
        host_help="connect to this host (https; http://HOST for plain HTTP)",
        path_help="shell path (default /etcha/v1/shell)",
    )
    p.add_argument("source", help="source name on the target (its shell is used)")
    p.add_argument("target", nargs="?", default=None, help="target name from the config")
    p.set_defaults(handler="agent.cli.shell_cmds:cmd_shell")


def _push_nats_flags(p: argparse.ArgumentParser) -> None:
    """``push --nats``: publish once over NATS (docs/scaling.md)."""
    p.add_argument(
        "--nats",
        dest="nats",
        action="store_true",
        help="publish once to <nats.subjectPrefix>.push.SOURCE and print each host's reply as "
        "it arrives (--timeout defaults to 10s; waiting also ends 2s after the last reply)",
    )
    p.add_argument(
        "--host",
        dest="nats_host",
        default="",
        metavar="NAME",
        help="with --nats: only the host whose nats.hostname (or host name) is NAME",
    )
    p.add_argument(
        "--expect",
        dest="expect",
        type=_positive_int,
        default=None,
        metavar="N",
        help="with --nats: stop after N replies (default: 1 with --host)",
    )


def _register_fingerprint(sub: Any) -> None:
    """``fingerprint``."""
    p = sub.add_parser(
        "fingerprint",
        help="print the SHA-256 fingerprint of this daemon's listener certificate",
        description="Prints sha256:<hex> of the certificate `agent run` serves: "
        "run.tlsCertificatePath or run.tlsCertificateBase64 when set, else the self-signed one "
        "in <run.stateDir>/tls/ (created by the first `agent run`). Pin it on the pushing side "
        "with targets.<name>.fingerprint or `agent push --fingerprint`.",
    )
    p.set_defaults(handler="agent.cli.fingerprint_cmds:cmd_fingerprint")
