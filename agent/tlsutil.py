"""TLS material for the listener: self-signed certificates and the server SSL context.

SPEC 16: the listener serves TLS by default. The certificate comes from, in this order:

1. ``run.tlsCertificatePath`` + ``run.tlsKeyPath`` (PEM files), when both are set;
2. ``run.tlsCertificateBase64`` + ``run.tlsKeyBase64`` (base64 of PEM, or of DER), when both set;
3. otherwise a freshly generated self-signed certificate (EC P-256, CN ``agent``) whose SANs
   include ``localhost``, ``127.0.0.1``, ``::1`` and the host name, valid for one year and
   back-dated one hour for clock skew. Unlike Etcha's, clients can verify it by host name.

Invariants: a half-configured pair (a certificate without its key, or the reverse) is a
:class:`~agent.errors.ConfigError` naming the missing setting, never a silent fallback. The
minimum protocol is TLS 1.2. Key material never appears in messages or logs. When the ``ssl``
module needs files for in-memory material, they are written with mode 0600 inside a private
(0700) temporary directory and deleted as soon as they are loaded.

``cryptography`` is imported lazily: only the daemon and push paths use this module.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import ipaddress
import logging
import os
import socket
import ssl
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agent.errors import ConfigError

logger = logging.getLogger(__name__)

SELF_SIGNED_CN = "agent"
_VALIDITY = datetime.timedelta(days=365)
_BACKDATE = datetime.timedelta(hours=1)


def self_signed(hostnames: Sequence[str] = (), ips: Sequence[str] = ()) -> tuple[bytes, bytes]:
    """Generate a self-signed server certificate and its key.

    The SANs always include ``localhost``, ``127.0.0.1`` and ``::1``, plus ``hostnames`` and
    ``ips`` (duplicates dropped).

    Args:
        hostnames: extra DNS names (e.g. the host name).
        ips: extra IP addresses, as strings.

    Returns:
        ``(cert_pem, key_pem)``; the key is an unencrypted PKCS#8 EC P-256 key.

    Raises:
        ConfigError: an entry of ``ips`` is not an IP address, or a host name is not ASCII/IDNA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names: list[str] = []
    for name in ("localhost", *hostnames):
        dns = _idna(name)
        if dns and dns not in names:
            names.append(dns)
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for text in ("127.0.0.1", "::1", *ips):
        try:
            addr = ipaddress.ip_address(text.strip())
        except ValueError as exc:
            raise ConfigError(
                f"certificate IP address: expected an IPv4 or IPv6 address, got {text!r}"
            ) from exc
        if addr not in addrs:
            addrs.append(addr)

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SELF_SIGNED_CN)])
    now = datetime.datetime.now(datetime.UTC)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.extend(x509.IPAddress(a) for a in addrs)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now - _BACKDATE + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert_pem, key_pem


def _idna(name: str) -> str:
    name = name.strip().rstrip(".")
    if not name:
        return ""
    try:
        return name.encode("idna").decode("ascii").lower()
    except UnicodeError as exc:
        raise ConfigError(
            f"certificate host name: expected an ASCII or IDNA host name, got {name!r}"
        ) from exc


def server_ssl_context(
    *,
    cert_path: str = "",
    key_path: str = "",
    cert_b64: str = "",
    key_b64: str = "",
    hostname: str = "",
) -> ssl.SSLContext:
    """Build the listener's SSL context (see the module docstring for the order of choices).

    Args:
        cert_path: ``run.tlsCertificatePath``.
        key_path: ``run.tlsKeyPath``.
        cert_b64: ``run.tlsCertificateBase64``.
        key_b64: ``run.tlsKeyBase64``.
        hostname: host name for the self-signed certificate; defaults to ``socket.gethostname()``.

    Returns:
        A server context with a minimum of TLS 1.2.

    Raises:
        ConfigError: a half-configured pair, or material that cannot be decoded or loaded.
    """
    _check_pair(cert_path, key_path, "run.tlsCertificatePath", "run.tlsKeyPath", "a path")
    _check_pair(cert_b64, key_b64, "run.tlsCertificateBase64", "run.tlsKeyBase64", "base64")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert_path and key_path:
        try:
            ctx.load_cert_chain(os.path.expanduser(cert_path), os.path.expanduser(key_path))
        except (OSError, ssl.SSLError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "unusable"
            raise ConfigError(
                "run.tlsCertificatePath/run.tlsKeyPath: expected a readable PEM certificate and "
                f"matching key, got {reason} ({cert_path}, {key_path})"
            ) from exc
        return ctx
    if cert_b64 and key_b64:
        cert_pem = _decode_material(cert_b64, "run.tlsCertificateBase64", key=False)
        key_pem = _decode_material(key_b64, "run.tlsKeyBase64", key=True)
        load_pem_pair(ctx, cert_pem, key_pem, what="run.tlsCertificateBase64/run.tlsKeyBase64")
        return ctx
    logger.info("Generating self-signed certificate for listener")
    if hostname:
        cert_pem, key_pem = self_signed([hostname])
    else:
        try:
            cert_pem, key_pem = self_signed([socket.gethostname()])
        except ConfigError:
            # An odd machine host name must not stop the listener; localhost SANs remain.
            logger.warning("Host name is not usable in a certificate; leaving it out")
            cert_pem, key_pem = self_signed()
    load_pem_pair(ctx, cert_pem, key_pem, what="self-signed certificate")
    return ctx


def _check_pair(cert: str, key: str, cert_name: str, key_name: str, kind: str) -> None:
    if cert and not key:
        raise ConfigError(f"{key_name}: expected {kind} to go with {cert_name}, got nothing")
    if key and not cert:
        raise ConfigError(f"{cert_name}: expected {kind} to go with {key_name}, got nothing")


def _decode_material(text: str, name: str, *, key: bool) -> bytes:
    """Base64 (standard or URL-safe) of PEM or DER → PEM bytes."""
    compact = "".join(text.split())
    compact += "=" * (-len(compact) % 4)
    try:
        raw = base64.b64decode(compact.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ConfigError(f"{name}: expected base64 text, got undecodable input") from exc
    if raw.lstrip().startswith(b"-----BEGIN"):
        return raw
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        if key:
            private = serialization.load_der_private_key(raw, password=None)
            return private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        return x509.load_der_x509_certificate(raw).public_bytes(serialization.Encoding.PEM)
    except (ValueError, TypeError) as exc:
        kind = "an unencrypted private key" if key else "a certificate"
        raise ConfigError(f"{name}: expected base64 of PEM or DER {kind}, got other data") from exc


def load_pem_pair(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes, *, what: str) -> None:
    """Load an in-memory PEM certificate and key into ``ctx`` through private temp files.

    Args:
        ctx: the context to load into.
        cert_pem: certificate (chain) PEM.
        key_pem: private key PEM.
        what: the setting names, for the error message.

    Raises:
        ConfigError: the material does not load (bad PEM, key does not match the certificate).
    """
    with tempfile.TemporaryDirectory(prefix="agent-tls-") as tmp:
        os.chmod(tmp, 0o700)
        cert_file = Path(tmp) / "cert.pem"
        key_file = Path(tmp) / "key.pem"
        _write_private(cert_file, cert_pem)
        _write_private(key_file, key_pem)
        try:
            ctx.load_cert_chain(str(cert_file), str(key_file))
        except ssl.SSLError as exc:
            raise ConfigError(
                f"{what}: expected a PEM certificate and matching private key, got unusable data"
            ) from exc
        finally:
            for f in (key_file, cert_file):
                f.unlink(missing_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
