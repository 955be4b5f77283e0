"""Handler for ``agent fingerprint`` (apart from ``push``, which needs none of the listener's TLS
helpers)."""

from __future__ import annotations

import argparse

from agent.cli.common import load_config_for
from agent.net.tlsutil import listener_fingerprint


def cmd_fingerprint(args: argparse.Namespace) -> int:
    """``agent fingerprint``: the listener certificate's ``sha256:<hex>``."""
    run = load_config_for(args).run
    print(
        listener_fingerprint(
            cert_path=run.tls_certificate_path,
            cert_b64=run.tls_certificate_base64,
            state_dir=run.state_dir,
        )
    )
    return 0


__all__ = ["cmd_fingerprint"]
