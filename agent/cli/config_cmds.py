"""Handler for ``agent show-config``: print the effective config with secrets masked.

Invariant: only :meth:`agent.config.schema.Config.masked_dict` output is printed, so no secret value
(signing key, metrics key, TLS key, anything named like a password/secret/token) reaches stdout.
"""

from __future__ import annotations

import argparse
import json

from agent.cli.common import load_config_for


def cmd_show_config(args: argparse.Namespace) -> int:
    """Print the merged config (file, ``AGENT_CONFIG``, ``AGENT_*``, ``-x``) as indented JSON.

    Args:
        args: the parsed command line (``-c``/``-x`` are read by ``load_config_for``).

    Raises:
        ConfigError: the config does not load.

    Returns:
        0.
    """
    config = load_config_for(args)
    print(json.dumps(config.masked_dict(), indent=2, sort_keys=True, ensure_ascii=False))
    return 0
