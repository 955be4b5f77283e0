"""Parsers of ``agent delegate`` and ``agent revoke`` (handlers in :mod:`agent.cli.trust_cmds`)."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def register(sub: Any) -> None:
    """Add ``delegate`` and ``revoke`` to ``sub`` (an argparse subparsers action)."""
    p = sub.add_parser(
        "delegate",
        help="sign a delegation: let another key sign for some sources and actions",
        description="Print (or write with -o) a delegation JWT (typ etcha-delegation+jwt) signed "
        "with build.signingKey (or --key), granting --subject the --sources and --actions until "
        "--expires. Put it in build.delegationChain of the subject's signer (docs/security.md).",
    )
    p.add_argument("--subject", required=True, help="the delegated public key string")
    p.add_argument("--sources", required=True, help="comma-separated source names, or *")
    p.add_argument(
        "--actions", required=True, help="comma-separated: push, pull, check, shell, delegate"
    )
    p.add_argument(
        "--delegate",
        action="store_true",
        help="let the subject sign a further link (adds delegate)",
    )
    p.add_argument("--expires", required=True, help="lifetime, e.g. 90d, 12h (required)")
    p.add_argument(
        "--key", default="", help="private key string or file (default: build.signingKey)"
    )
    p.add_argument("-o", dest="output", default="", help="write the JWT to this file (mode 0644)")
    p.set_defaults(handler="agent.cli.trust_cmds:cmd_delegate")

    p = sub.add_parser(
        "revoke",
        help="sign a revocation list: refuse tokens a key signed before a time",
        description="Print (or write with -o) a revocation list JWT (typ etcha-revocations+jwt) "
        "signed with build.signingKey (or --key, a trust root), revoking --key-id for tokens "
        "issued before --before. --merge keeps the entries of an existing list.",
    )
    p.add_argument(
        "--key", dest="revoked", required=True, help="the key id or public key string to revoke"
    )
    p.add_argument("--before", required=True, help="now, or an RFC 3339 UTC time")
    p.add_argument("--merge", default="", help="an existing revocation list whose entries stay")
    p.add_argument(
        "--signing-key", default="", help="private key string or file (default: build.signingKey)"
    )
    p.add_argument("-o", dest="output", default="", help="write the JWT to this file (mode 0644)")
    p.set_defaults(handler="agent.cli.trust_cmds:cmd_revoke")
