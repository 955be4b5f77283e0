"""Helpers shared by CLI handlers: config loading and output."""

from __future__ import annotations

import argparse
import os

from agent.config.schema import Config, load_config
from agent.core.errors import SourceError
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.core.logs import setup

TYPE_CHECKING = False
if TYPE_CHECKING:
    from agent.net.http import HTTPClient


def load_config_for(args: argparse.Namespace) -> Config:
    """Load the config the way every subcommand does: file, AGENT_CONFIG, AGENT_*, then -x."""
    config = load_config(
        path=getattr(args, "config_path", None),
        overrides=tuple(getattr(args, "overrides", ()) or ()),
        environ=os.environ,
        cwd=os.getcwd(),
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


def read_token_arg(where: str, *, timeout: float = 10.0, config: Config | None = None) -> str:
    """Read a token from a file path or an http(s) URL (the one stdlib client, no aiohttp).

    At most :data:`agent.core.limits.DEFAULT_MAX_TOKEN_BYTES` are read. A URL may carry
    ``#Name:value`` headers (:func:`agent.net.urls.parse_http_path`). With ``config``, its
    ``httpClient`` settings (caFile, noSystemCA, tlsSkipVerify, followCrossOriginRedirects)
    apply; without, the system CAs verify and only same-origin redirects are followed. Messages
    name a URL without its user info, query or header block, and never quote them.

    Raises:
        SourceError: the file or URL could not be read, or is too large.
        ConfigError: ``httpClient.caFile`` cannot be loaded.
    """
    from agent.net.urls import is_http, parse_http_path, safe_url  # lazy: not for pattern files

    if is_http(where):
        from agent.net.http import RequestError  # lazy: the HTTP client, only for a URL

        shown = safe_url(where)
        parsed = parse_http_path(where, what="src")
        try:
            resp = http_client_for(config).request(
                parsed.url,
                headers=parsed.headers,
                timeout=parsed.timeout if parsed.timeout is not None else timeout,
                max_bytes=DEFAULT_MAX_TOKEN_BYTES,
                body_statuses=(200,),
                skip_verify=parsed.skip_verify,
            )
        except RequestError as exc:
            raise SourceError(f"error opening src {shown}: {exc}") from None
        if resp.status != 200:
            raise SourceError(f"error opening src {shown}: bad response from server: {resp.status}")
        data = resp.body
    else:
        shown = where
        try:
            with open(where, "rb") as fh:
                data = fh.read(DEFAULT_MAX_TOKEN_BYTES + 1)
        except OSError as exc:
            raise SourceError(f"error opening src {where}: {exc.strerror}") from exc
    limit = DEFAULT_MAX_TOKEN_BYTES
    if len(data) > limit:
        raise SourceError(f"error opening src {shown}: larger than {limit} bytes")
    return data.decode("utf-8", errors="replace").strip()


def http_client_for(config: Config | None) -> HTTPClient:
    """The one HTTP client, set up from ``config.httpClient`` (defaults without a config)."""
    from agent.net.http import HTTPClient  # lazy: render and local of a file make no request
    from agent.net.tls import TLSOptions  # lazy: with the HTTP client

    if config is None:
        return HTTPClient()
    client = config.http_client
    return HTTPClient(
        TLSOptions(
            skip_verify=client.tls_skip_verify,
            ca_file=client.ca_file,
            no_system_ca=client.no_system_ca,
        ),
        follow_cross_origin=client.follow_cross_origin_redirects,
    )
