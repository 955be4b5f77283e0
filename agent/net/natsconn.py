"""NATS connection settings and subject names, shared by the host side and the client.

Nothing here imports the NATS client (``nats-py``): :func:`connect` imports it when called, so a
process without a ``nats`` section never loads it (docs/scaling.md).

Subjects (``<prefix>`` is ``nats.subjectPrefix``, ``etcha`` by default):

- ``<prefix>.push.<source>`` and ``<prefix>.push.<source>.<host>``: pattern pushes. The JetStream
  stream (``nats.stream``) captures ``<prefix>.push.>`` and keeps the last message per subject,
  so a host that was offline catches up when it connects.
- ``<prefix>.direct.<source>`` and ``<prefix>.direct.<source>.<host>``: check-mode pushes and
  ad-hoc commands. The stream does not capture them, so they are never stored.
- ``<prefix>.status``: every host answers with its status document.

The body of a push is the token, exactly as an HTTPS push body; the headers ``Etcha-Check: true``
and ``Etcha-Filter: <regex>`` stand for the query parameters.
"""

from __future__ import annotations

import re
import ssl
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.core.errors import ConfigError, SourceError

__all__ = [
    "CHECK_HEADER",
    "FILTER_HEADER",
    "KEY_HEADER",
    "NATSSettings",
    "connect",
    "host_token",
    "push_subjects",
    "source_token_ok",
    "status_subject",
    "stream_subjects",
]

CHECK_HEADER = "Etcha-Check"
FILTER_HEADER = "Etcha-Filter"
#: ``Bearer <run.systemMetricsKey>`` on a status request, when the hosts have a key.
KEY_HEADER = "Authorization"
#: Seconds between pings: a silent server is found dead after about three of them.
PING_INTERVAL = 20
#: Characters allowed in one subject token (a source name).
_TOKEN = re.compile(r"[A-Za-z0-9_-]+")
#: Characters kept in a host name (dots allowed: a host subject may have several tokens).
_HOST_BAD = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class NATSSettings:
    """The ``nats`` section as the connection needs it (agent.config's ``NATSConfig``)."""

    servers: tuple[str, ...]
    creds_file: str = ""
    nkey_seed_file: str = ""
    token: str = field(default="", repr=False)
    user: str = ""
    password: str = field(default="", repr=False)
    tls: Mapping[str, str] = field(default_factory=dict)
    subject_prefix: str = "etcha"
    stream: str = "ETCHA"

    @classmethod
    def of(cls, nats: Any) -> NATSSettings:
        """From a ``NATSConfig`` (any object with the same attributes)."""
        return cls(
            servers=tuple(nats.servers),
            creds_file=nats.creds_file,
            nkey_seed_file=nats.nkey_seed_file,
            token=nats.token,
            user=nats.user,
            password=nats.password,
            tls=dict(nats.tls),
            subject_prefix=nats.subject_prefix or "etcha",
            stream=nats.stream,
        )


def source_token_ok(source: str) -> bool:
    """Whether a source name can be one subject token (letters, digits, ``_`` and ``-``)."""
    return bool(_TOKEN.fullmatch(source))


def host_token(hostname: str) -> str:
    """A host name as subject tokens: characters other than ``[A-Za-z0-9_.-]`` become ``_``."""
    cleaned = _HOST_BAD.sub("_", hostname).strip(".")
    return re.sub(r"\.{2,}", ".", cleaned) or "_"


def push_subjects(prefix: str, source: str, host: str = "", *, stored: bool = True) -> str:
    """The subject of a push: ``<prefix>.push.<source>[.<host>]`` (``direct`` when not stored)."""
    kind = "push" if stored else "direct"
    base = f"{prefix}.{kind}.{source}"
    return f"{base}.{host_token(host)}" if host else base


def stream_subjects(prefix: str) -> list[str]:
    """What the JetStream stream captures: ``<prefix>.push.>``."""
    return [f"{prefix}.push.>"]


def status_subject(prefix: str) -> str:
    """``<prefix>.status``."""
    return f"{prefix}.status"


def _tls_context(tls: Mapping[str, str]) -> ssl.SSLContext:
    ca_file = tls.get("caFile") or None
    try:
        ctx = ssl.create_default_context(cafile=ca_file)
        if tls.get("certFile"):
            ctx.load_cert_chain(tls["certFile"], tls.get("keyFile") or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"nats.tls: expected readable PEM files (caFile, certFile, keyFile), got {exc}"
        ) from exc
    return ctx


def _auth(settings: NATSSettings) -> dict[str, Any]:
    given = [
        name
        for name, value in (
            ("credsFile", settings.creds_file),
            ("nkeySeedFile", settings.nkey_seed_file),
            ("token", settings.token),
            ("user", settings.user),
        )
        if value
    ]
    if len(given) > 1:
        raise ConfigError(
            "nats: expected one authentication (credsFile, nkeySeedFile, token or "
            f"user/password), got {', '.join(given)}"
        )
    if settings.creds_file:
        return {"user_credentials": settings.creds_file}
    if settings.nkey_seed_file:
        return {"nkeys_seed": settings.nkey_seed_file}
    if settings.token:
        return {"token": settings.token}
    if settings.user:
        return {"user": settings.user, "password": settings.password}
    return {}


def connect_options(settings: NATSSettings) -> dict[str, Any]:
    """Keyword arguments of ``nats.connect`` for ``settings`` (no reconnect: callers own that).

    Raises:
        ConfigError: no servers, more than one authentication, or unreadable TLS files.
    """
    if not settings.servers:
        raise ConfigError("nats.servers: expected at least one nats:// or tls:// URL, got none")
    for url in settings.servers:
        if "://" in url and not url.startswith(("nats://", "tls://")):
            raise ConfigError(f"nats.servers: expected nats:// or tls:// URLs, got {url!r}")
    options: dict[str, Any] = {"servers": list(settings.servers), **_auth(settings)}
    if settings.tls or any(s.startswith("tls://") for s in settings.servers):
        options["tls"] = _tls_context(settings.tls)
    return options


def _client_class() -> Any:
    """nats-py's ``Client``, imported on first use (lazy: only a process with a ``nats`` section).

    nats-py imports aiohttp only for ``ws://`` servers, which are not accepted here. When the
    process has not loaded aiohttp (the CLI), the import is made to fail for that one statement,
    so ``agent push --nats`` does not pay for it (about 0.4 s); the daemon has it loaded already.
    """
    blocked = "aiohttp" not in sys.modules and "nats.aio.client" not in sys.modules
    if blocked:
        sys.modules["aiohttp"] = None  # type: ignore[assignment]
    try:
        from nats.aio.client import Client
    finally:
        if blocked:
            del sys.modules["aiohttp"]
    return Client


async def connect(
    settings: NATSSettings,
    *,
    name: str,
    timeout: float = 5.0,
    callbacks: Mapping[str, Any] | None = None,
    servers: Sequence[str] | None = None,
) -> Any:
    """Connect once (``allow_reconnect`` off: the host side reconnects with its own backoff).

    Args:
        settings: the ``nats`` section.
        name: the connection name the server shows.
        timeout: seconds for the connection and handshake.
        callbacks: ``error_cb``, ``closed_cb``, ``disconnected_cb``... passed to nats-py.
        servers: overrides ``settings.servers`` (tests).

    Returns:
        The connected ``nats.aio.client.Client``.

    Raises:
        ConfigError: see :func:`connect_options`.
        SourceError: no server could be reached (the last error says why).
    """
    client_class = _client_class()
    options = connect_options(settings)
    if servers is not None:
        options["servers"] = list(servers)

    async def _quiet_error(exc: Exception) -> None:
        return None  # connection errors are reported by the caller

    options.update({"error_cb": _quiet_error, **dict(callbacks or {})})
    nc = client_class()
    try:
        # One quick pass over the servers (nats-py tries each twice at most, no wait between).
        await nc.connect(
            name=name,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            connect_timeout=max(1, round(timeout)),
            ping_interval=PING_INTERVAL,
            max_outstanding_pings=3,
            **options,
        )
    except Exception as exc:
        why = nc.last_error or exc
        raise SourceError(
            f"nats: expected to connect to {', '.join(options['servers'])}, got "
            f"{str(why) or type(why).__name__}"
        ) from exc
    return nc
