"""Helpers shared by CLI handlers: config loading and output."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from agent.config.schema import Config, load_config
from agent.core.logs import setup


def load_config_for(args: argparse.Namespace) -> Config:
    """Load the config the way every subcommand does: file, AGENT_CONFIG, AGENT_*, then -x."""
    config = load_config(
        path=getattr(args, "config_path", None),
        overrides=tuple(getattr(args, "overrides", ()) or ()),
        environ=os.environ,
        cwd=Path.cwd(),
    )
    _apply_cli_section(args, config)
    return config


def _apply_cli_section(args: argparse.Namespace, config: Config) -> None:
    """The config's ``cli`` section applies where the command line did not say otherwise."""
    cli = config.cli
    if cli.disable_external_native:
        args.disable_external = True
    level = getattr(args, "log_level", None) or cli.log_level or None
    fmt = getattr(args, "log_format", None) or cli.log_format or None
    no_color = bool(getattr(args, "no_color", False) or cli.no_color)
    if (level, fmt, no_color) != (
        getattr(args, "log_level", None),
        getattr(args, "log_format", None),
        getattr(args, "no_color", False),
    ):
        setup(level or "info", fmt or "human", no_color)


def looks_like_token(text: str) -> bool:
    """A compact JWS: three base64url parts separated by dots, nothing else."""
    parts = text.strip().split(".")
    return len(parts) == 3 and all(
        p and all(c.isalnum() or c in "-_" for c in p) for p in parts[:2]
    )


def read_token_arg(where: str, *, timeout: float = 10.0) -> str:
    """Read a token from a file path or an http(s) URL (urllib: no aiohttp in the CLI path).

    At most :data:`agent.jws.tokens.DEFAULT_MAX_TOKEN_BYTES` are read. Messages name a URL without
    its user info, query or header block, and never quote them (:func:`agent.net.fetch.redact`).

    Raises:
        SourceError: the file or URL could not be read, or is too large.
    """
    from agent.core.errors import SourceError
    from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES as limit
    from agent.net.fetch import is_http, redact, safe_url

    if is_http(where):
        import http.client
        import urllib.error
        import urllib.request

        shown = safe_url(where)
        try:
            with urllib.request.urlopen(where, timeout=timeout) as resp:  # noqa: S310
                data: bytes = resp.read(limit + 1)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            # The exception text can quote the URL (http.client's "nonnumeric port: 'pw@h'"):
            # redact it, and do not chain it, so a traceback cannot show it either.
            raise SourceError(f"error opening src {shown}: {redact(str(exc), where)}") from None
    else:
        shown = where
        try:
            with open(where, "rb") as fh:
                data = fh.read(limit + 1)
        except OSError as exc:
            raise SourceError(f"error opening src {where}: {exc.strerror}") from exc
    if len(data) > limit:
        raise SourceError(f"error opening src {shown}: larger than {limit} bytes")
    return data.decode("utf-8", errors="replace").strip()
