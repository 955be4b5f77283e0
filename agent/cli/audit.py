"""Registrar for ``audit``: verify and show the host's audit log, print its public key."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add ``audit verify|show|key`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "audit",
        help="verify or show this host's tamper-evident audit log; print its public key",
        description="The daemon records every admitted and refused token, every run, start, "
        "stop and reload in <run.stateDir>/audit/audit.jsonl, hash-chained, with signed "
        "checkpoints (docs/security.md).",
    )
    verbs = p.add_subparsers(dest="audit_verb", metavar="VERB", required=True)
    v = verbs.add_parser(
        "verify",
        help="check the chain, the checkpoints and optionally a receipt",
        description="Walks every audit file in order and reports the first broken link as "
        "FILE:LINE (1-based): a changed, removed, inserted or moved line, a seq gap, a bad "
        "checkpoint. Exit 0: intact (and the receipt confirmed); 1: broken.",
    )
    v.add_argument(
        "--public-key",
        dest="public_key",
        default=None,
        metavar="KEY",
        help="the audit public key string (`agent audit key` on the host); default: the "
        "host's own key, when readable",
    )
    v.add_argument(
        "--receipt",
        dest="receipt",
        default=None,
        metavar="SEQ:HASH",
        help="confirm a receipt (auditSeq:auditHash of a push Result)",
    )
    v.add_argument("dir", nargs="?", default=None, metavar="DIR", help="audit directory")
    v.set_defaults(handler="agent.cli.audit_cmds:cmd_verify")
    _register_show_and_key(verbs)


def _register_show_and_key(verbs: Any) -> None:
    s = verbs.add_parser(
        "show",
        help="print audit events as a table or JSON",
        description="Prints the audit log's events (checkpoints only with --event checkpoint).",
    )
    s.add_argument("--source", dest="source", default=None, metavar="S", help="only source S")
    s.add_argument(
        "--since", dest="since", default=None, metavar="DURATION", help="only the last DURATION"
    )
    s.add_argument("--event", dest="event", default=None, metavar="E", help="only event E")
    s.add_argument(
        "-f",
        dest="output_format",
        choices=("table", "json"),
        default=None,
        help="output format (default table; the global -f json also selects json)",
    )
    s.add_argument("dir", nargs="?", default=None, metavar="DIR", help="audit directory")
    s.set_defaults(handler="agent.cli.audit_cmds:cmd_show")
    k = verbs.add_parser(
        "key",
        help="print the audit public key (generating the host's key once when missing)",
        description="Prints the public key string of run.auditSigningKey, else of "
        "<run.stateDir>/audit.key (generated, 0600, when missing). Give it to "
        "`agent audit verify --public-key` elsewhere.",
    )
    k.set_defaults(handler="agent.cli.audit_cmds:cmd_key")
