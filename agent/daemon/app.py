"""The listener of `agent run`: address, TLS, routes and middlewares (SPEC 15, 16).

:func:`start_app` builds the HTTP application (an :class:`agent.net.httpserver.App`, h11):
:func:`agent.daemon.server.create_app` around the push :class:`~agent.daemon.ingress.Ingress`,
plus :func:`agent.daemon.httpmw.app_extras` (the metrics route, webhooks and the rate limiter)
and the shell route (:class:`LazyShells`: :mod:`agent.daemon.shell` and the pty modules are
imported at the first shell request); it starts it behind the bounded listener
(:func:`agent.daemon.listener.start_listener`).

TLS: configured material (``run.tlsCertificate*``/``run.tlsKey*``), else the persistent
self-signed pair in ``<stateDir>/tls/`` (generated once, reused at every start, replaced with a
warning when missing, corrupt or expiring). A child Python process checks or generates it, so the
long-running daemon never loads ``cryptography``. The certificate's fingerprint is logged either
way (``sha256:<hex>``, what ``agent fingerprint`` prints and clients pin).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.core.errors import ConfigError, SourceError
from agent.daemon.ingress import Ingress
from agent.daemon.listener import ListenerLimits, start_listener
from agent.daemon.server import SHELL_PATH, create_app
from agent.net.httpserver import Handler, Request, Response
from agent.net.tlsutil import (
    ListenerCertificate,
    ensure_listener_certificate,
    fingerprint_pem,
    listener_fingerprint,
    server_ssl_context,
    tls_dir,
)

if TYPE_CHECKING:
    import ssl

    from agent.config.schema import Config
    from agent.daemon.shell import AuditHook, ShellSessions

logger = logging.getLogger(__name__)

#: Run in a short-lived child so the daemon never maps the ``cryptography`` library (~10 MB RSS).
#: It reuses or creates ``<stateDir>/tls/`` and prints where the pair is (or the error) as JSON.
_SELF_SIGNED_SCRIPT = """
import json, socket, sys
from pathlib import Path
from agent.core.errors import AgentError
from agent.net.tlsutil import ensure_listener_certificate
host = socket.gethostname()
try:
    cert = ensure_listener_certificate(Path(sys.argv[1]), [host] if host else [])
except AgentError as exc:
    json.dump({"error": str(exc)}, sys.stdout)
else:
    json.dump(cert.to_dict(), sys.stdout)
"""


def parse_listen_address(address: str) -> tuple[str | None, int]:
    """Split ``run.listenAddress``: ``:4000`` (all interfaces), ``127.0.0.1:4000``, ``[::1]:4000``.

    Args:
        address: the configured address.

    Returns:
        ``(host or None for all interfaces, port)``.

    Raises:
        ConfigError: not ``[host]:port`` with a numeric port.
    """
    host, sep, port_text = address.rpartition(":")
    if not sep or not port_text.isdigit() or int(port_text) > 65535:
        raise ConfigError(
            f"run.listenAddress: expected [host]:port such as ':4000', got {address!r}"
        )
    host = host.strip("[]")
    return (host or None), int(port_text)


def _self_signed_pair(directory: Path) -> tuple[Path, Path, bool]:
    """Reuse or create the listener's pair in ``directory``; log what happened.

    Returns:
        ``(cert_path, key_path, created)``.

    Raises:
        ConfigError: the directory or the files cannot be written.
    """
    try:
        child = subprocess.run(
            [sys.executable, "-c", _SELF_SIGNED_SCRIPT, str(directory)],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        doc = json.loads(child.stdout)
        if isinstance(doc, dict) and isinstance(doc.get("error"), str):
            raise ConfigError(doc["error"])
        cert = ListenerCertificate.from_dict(doc)
    except (OSError, subprocess.SubprocessError, ValueError, AttributeError) as exc:
        logger.warning("Certificate helper process failed (%s); running it in-process", exc)
        host = socket.gethostname()
        cert = ensure_listener_certificate(directory, [host] if host else [])
    for warning in cert.warnings:
        logger.warning("Listener certificate: %s", warning)
    return cert.cert_path, cert.key_path, cert.created


def listener_ssl(config: Config) -> ssl.SSLContext:
    """The listener's TLS context (SPEC 16): configured material, else the persistent one.

    Args:
        config: the loaded config (``run.tls*``, ``run.stateDir``).

    Returns:
        A server context, minimum TLS 1.2.

    Raises:
        ConfigError: half-configured or unusable certificate material, or an unwritable
            ``<stateDir>/tls``.
    """
    import ssl

    run = config.run
    if (
        run.tls_certificate_path
        or run.tls_key_path
        or run.tls_certificate_base64
        or run.tls_key_base64
    ):
        ctx = server_ssl_context(
            cert_path=run.tls_certificate_path,
            key_path=run.tls_key_path,
            cert_b64=run.tls_certificate_base64,
            key_b64=run.tls_key_base64,
        )
        fingerprint = listener_fingerprint(
            cert_path=run.tls_certificate_path, cert_b64=run.tls_certificate_base64
        )
        logger.info("Listener certificate fingerprint: %s (configured)", fingerprint)
        return ctx
    cert_path, key_path, created = _self_signed_pair(tls_dir(run.state_dir or "."))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path))
        fingerprint = fingerprint_pem(cert_path.read_bytes(), what=str(cert_path))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"listener certificate: expected a usable pair in {cert_path.parent}, got {exc}"
        ) from exc
    how = "generated" if created else "reused"
    logger.info(
        "Listener certificate fingerprint: %s (self-signed, %s, %s)", fingerprint, how, cert_path
    )
    return ctx


async def start_app(
    config: Config,
    ingress: Ingress,
    *,
    extras: Mapping[str, Any],
    on_refused: Callable[[str], None] | None = None,
    audit: AuditHook | None = None,
) -> Any:
    """Build the application and start the listener (``None`` when ``listenAddress`` is empty).

    Args:
        config: the loaded config.
        ingress: answers pushes.
        extras: more :func:`agent.daemon.server.create_app` keyword arguments (``extra_routes``,
            ``fallback``, ``middlewares``).
        on_refused: counts connections the listener refused.
        audit: the audit log's ``record(event, **fields)`` for shell sessions (``None``: none).

    Returns:
        The :class:`agent.net.httpserver.RunningServer`, or ``None``.

    Raises:
        ConfigError: an invalid listen address or TLS material.
        SourceError: the listener could not be started.
    """
    run = config.run
    if not run.listen_address:
        logger.info("run.listenAddress is empty: not listening")
        return None
    host, port = parse_listen_address(run.listen_address)
    limits = ListenerLimits.from_run(run)
    shells = LazyShells(ingress, audit=audit)
    routes = (*extras.get("extra_routes", ()), *shells.routes())
    app = create_app(
        ingress,
        max_token_bytes=int(run.max_token_bytes),
        max_body_bytes=int(run.max_body_bytes),
        timeout_body=limits.timeout_body or None,
        **{**extras, "extra_routes": routes},
    )
    app.on_shutdown.append(shells.close_all)
    ssl_ctx = None if run.tls_disable else await asyncio.to_thread(listener_ssl, config)
    try:
        runner = await start_listener(
            app, host, port, limits=limits, ssl_context=ssl_ctx, on_refused=on_refused
        )
    except OSError as exc:
        raise SourceError(
            f"run.listenAddress {run.listen_address}: expected to listen, got {exc.strerror}"
        ) from exc
    logger.info(
        "Starting listener on %s (%s)",
        run.listen_address,
        "http" if ssl_ctx is None else "https",
    )
    return runner


class LazyShells:
    """The shell route of the listener; the sessions (:func:`shell_sessions`), and with them
    :mod:`agent.daemon.shell` (pty, termios), are created by the first shell request. Most
    daemons never get one, and the route exists whatever the config (a SIGHUP may add a shell).
    """

    def __init__(self, ingress: Ingress, *, audit: AuditHook | None = None) -> None:
        self._ingress = ingress
        self._audit = audit
        self._sessions: ShellSessions | None = None

    def routes(self) -> tuple[tuple[str, str, Handler], ...]:
        """The ``extra_routes`` entry of :func:`agent.daemon.server.create_app`."""
        return (("POST", SHELL_PATH + "/{source}", self.handle),)

    async def handle(self, request: Request) -> Response:
        """Answer one shell request (:meth:`agent.daemon.shell.ShellSessions.handle`)."""
        if self._sessions is None:
            self._sessions = shell_sessions(self._ingress, audit=self._audit)
        return await self._sessions.handle(request)

    async def close_all(self, app: Any = None) -> None:
        """Close every session (the app's ``on_shutdown``)."""
        if self._sessions is not None:
            await self._sessions.close_all(app)


def shell_sessions(ingress: Ingress, *, audit: AuditHook | None = None) -> ShellSessions:
    """The shell endpoint's sessions, sharing the push path's gate, config, events and metrics."""
    from agent.daemon.shell import ShellSessions  # lazy: pty and termios, at the first session

    runner = ingress.runner
    return ShellSessions(
        config=runner.config_fn,
        gate=ingress.gate,
        view=runner.view,
        events=runner.events,
        metrics=runner.metrics,
        audit=audit,
    )


#: Listener settings a SIGHUP cannot apply (they need a restart).
LISTENER_KEYS = (
    "listenAddress",
    "maxBodyBytes",
    "tlsDisable",
    "tlsCertificatePath",
    "tlsCertificateBase64",
    "tlsKeyPath",
    "tlsKeyBase64",
)


def listener_changed(old_run: dict[str, Any], new_run: dict[str, Any]) -> bool:
    """Whether a re-read ``run`` section changes a listener setting (see :data:`LISTENER_KEYS`)."""
    return any(old_run.get(k) != new_run.get(k) for k in LISTENER_KEYS)


__all__ = [
    "LISTENER_KEYS",
    "LazyShells",
    "listener_changed",
    "listener_ssl",
    "parse_listen_address",
    "shell_sessions",
    "start_app",
]
