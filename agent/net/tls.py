"""The one client TLS-context builder (pull, push, ``getFile``, ``copy``, ``jwt <url>``).

Every outgoing TLS connection of the agent gets its context from :func:`client_context`, built
from :class:`TLSOptions` (``httpClient.tlsSkipVerify``, ``caFile``, ``noSystemCA`` and, for push,
a certificate fingerprint pin). The choices:

- ``skip_verify``: no certificate or host name check; **no CA is loaded**.
- ``fingerprint`` (``sha256:<hex>``): no CA or host name check during the handshake, and **no CA
  is loaded**; the caller compares the SHA-256 of the DER peer certificate with the pin
  (:func:`check_fingerprint`) before any request byte is sent.
- otherwise the certificate and the host name are verified against ``ca_file`` plus the system
  store; with ``no_system_ca`` only ``ca_file`` is loaded (the system store is never read).

``hashlib`` is imported only when a pin is checked, once ``ssl`` has loaded OpenSSL (start-up,
issue 14).

Invariants: the minimum protocol is always TLS 1.2 (``ssl`` is imported when a context is
built). The system CA store is loaded only when a
verification needs it. ``no_system_ca`` without a ``ca_file`` (when verifying) and an unreadable
``ca_file`` are :class:`~agent.core.errors.ConfigError` naming the setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from agent.core.errors import ConfigError, SourceError
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    import ssl


#: The size of a SHA-256 digest.
_SHA256_BYTES = 32


@dataclass(frozen=True, repr=False, eq=False)  # no slots: start-up (issue 14)
class TLSOptions(Record):
    """How a client verifies a server.

    Attributes:
        skip_verify: do not verify the certificate at all (``httpClient.tlsSkipVerify``).
        ca_file: a PEM bundle of extra trusted CAs (``httpClient.caFile``).
        no_system_ca: trust only ``ca_file``, not the system store (``httpClient.noSystemCA``).
        fingerprint: ``sha256:<hex>`` pin of the server's DER certificate ("" = no pin).
    """

    skip_verify: bool = False
    ca_file: str = ""
    no_system_ca: bool = False
    fingerprint: str = ""


class FingerprintMismatch(SourceError):
    """A pinned server presented another certificate.

    Attributes:
        expected: the pinned SHA-256 digest.
        got: the digest of the certificate presented.
    """

    def __init__(self, expected: bytes, got: bytes) -> None:
        super().__init__(
            f"certificate fingerprint mismatch: expected sha256:{expected.hex()}, "
            f"got sha256:{got.hex()}"
        )
        self.expected = expected
        self.got = got


def client_context(options: TLSOptions) -> ssl.SSLContext:
    """Build the client SSL context for ``options`` (see the module docstring).

    Args:
        options: the verification settings.

    Returns:
        A ``PROTOCOL_TLS_CLIENT`` context with a minimum of TLS 1.2.

    Raises:
        ConfigError: ``ca_file`` cannot be loaded, or ``no_system_ca`` without a ``ca_file``.
    """
    import ssl  # stdlib, but kept off the `render`/`jwt <file>` paths that make no request

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2  # the minimum for every client connection
    if options.skip_verify or options.fingerprint:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if options.no_system_ca and not options.ca_file:
        raise ConfigError(
            "httpClient.noSystemCA: expected httpClient.caFile to name the CAs to trust "
            "instead, got no caFile"
        )
    if not options.no_system_ca:
        ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if options.ca_file:
        _load_ca_file(ctx, options.ca_file)
    return ctx


def _load_ca_file(ctx: ssl.SSLContext, ca_file: str) -> None:
    import ssl

    try:
        ctx.load_verify_locations(cafile=os.path.expanduser(ca_file))
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no usable PEM"
        raise ConfigError(
            f"httpClient.caFile: expected a readable PEM CA bundle, got {reason} ({ca_file})"
        ) from exc


def pinned_digest(fingerprint: str) -> bytes:
    """The SHA-256 digest of a canonical ``sha256:<hex>`` fingerprint.

    Raises:
        ConfigError: the fingerprint is not ``sha256:`` and 64 hex digits.
    """
    algorithm, _, text = fingerprint.partition(":")
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    if algorithm != "sha256" or len(digest) != _SHA256_BYTES:
        raise ConfigError(
            f"fingerprint: expected sha256: and 64 hex digits, got {fingerprint[:80]!r}"
        )
    return digest


def check_fingerprint(sock: ssl.SSLSocket, fingerprint: str) -> None:
    """Compare the peer certificate of ``sock`` with a ``sha256:<hex>`` pin.

    Raises:
        FingerprintMismatch: another (or no) certificate was presented.
        ConfigError: the pin is malformed.
    """
    import hashlib  # stdlib: OpenSSL's digests, loaded with ssl already
    import hmac

    expected = pinned_digest(fingerprint)
    der = sock.getpeercert(binary_form=True) or b""
    got = hashlib.sha256(der).digest()
    if not hmac.compare_digest(expected, got):
        raise FingerprintMismatch(expected, got)
