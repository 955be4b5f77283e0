"""Helpers shared by CLI handlers: config loading and output."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import Config


def load_config_for(args: argparse.Namespace) -> Config:
    """Load the config the way every subcommand does: file, AGENT_CONFIG, AGENT_*, then -x."""
    from agent.config import load_config

    return load_config(
        path=getattr(args, "config_path", None),
        overrides=tuple(getattr(args, "overrides", ()) or ()),
        environ=os.environ,
        cwd=Path.cwd(),
    )
