"""TLS material for the listener: self-signed certificates and the server SSL context.

SPEC 16: the listener serves TLS by default. The certificate comes from, in this order:

1. ``run.tlsCertificatePath`` + ``run.tlsKeyPath`` (PEM files), when both are set;
2. ``run.tlsCertificateBase64`` + ``run.tlsKeyBase64`` (base64 of PEM, or of DER), when both set;
3. otherwise a self-signed certificate (EC P-256, CN ``agent``) whose SANs include
   ``localhost``, ``127.0.0.1``, ``::1`` and the host name, back-dated one hour for clock skew.
   Unlike Etcha's, clients can verify it by host name. The daemon keeps it in
   ``<stateDir>/tls/`` (:func:`ensure_listener_certificate`): generated once, valid for ten years,
   reused at every start, so a client can pin its fingerprint (:func:`fingerprint_der`).

Fingerprints are ``sha256:`` and the lowercase hex SHA-256 of the DER certificate, with no
separators (what ``agent fingerprint`` prints and ``targets.<name>.fingerprint`` pins).

Invariants: the persistent key is written 0600 and atomically, in a 0700 directory, under an
exclusive lock, so two starts never mix one start's key with another's certificate; a missing,
corrupt, mismatched or expiring pair is replaced with a warning, never a crash loop. A
half-configured pair (a certificate without its key, or the reverse) is a
:class:`~agent.core.errors.ConfigError` naming the missing setting, never a silent fallback. The
minimum protocol is TLS 1.2. Key material never appears in messages or logs. When the ``ssl``
module needs files for in-memory material, they are written with mode 0600 inside a private
(0700) temporary directory and deleted as soon as they are loaded.

``cryptography`` is imported lazily: only the daemon and push paths use this module.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import fcntl
import hashlib
import ipaddress
import logging
import os
import re
import socket
import ssl
import stat
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.core.atomicio import atomic_write
from agent.core.errors import ConfigError

logger = logging.getLogger(__name__)

SELF_SIGNED_CN = "agent"
_VALIDITY = datetime.timedelta(days=365)
_BACKDATE = datetime.timedelta(hours=1)
#: The persistent listener certificate is pinned by fingerprint, so it lives long (as
#: Syncthing's device certificates do); it is replaced this long before it expires.
PERSISTENT_VALIDITY = datetime.timedelta(days=3650)
RENEW_BEFORE = datetime.timedelta(days=30)
#: File names inside ``<stateDir>/tls/``.
TLS_DIR_NAME = "tls"
CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
_LOCK_FILE = ".lock"
_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----\s+.*?-----END CERTIFICATE-----", re.DOTALL)


def fingerprint_der(der: bytes) -> str:
    """The fingerprint of a DER certificate: ``sha256:<lowercase hex, no separators>``."""
    return "sha256:" + hashlib.sha256(der).hexdigest()


def fingerprint_pem(pem: bytes, *, what: str) -> str:
    """The fingerprint of the first certificate in PEM text (stdlib only, no ``cryptography``).

    Args:
        pem: PEM text holding at least one certificate.
        what: the file or setting, for the error message.

    Raises:
        ConfigError: no PEM certificate in ``pem``.
    """
    match = _PEM_CERT.search(pem)
    if match is None:
        raise ConfigError(f"{what}: expected a PEM certificate, got none")
    try:
        der = ssl.PEM_cert_to_DER_cert(match.group(0).decode("ascii"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what}: expected a PEM certificate, got undecodable data") from exc
    return fingerprint_der(der)


def self_signed(
    hostnames: Sequence[str] = (),
    ips: Sequence[str] = (),
    *,
    validity: datetime.timedelta = _VALIDITY,
) -> tuple[bytes, bytes]:
    """Generate a self-signed server certificate and its key.

    The SANs always include ``localhost``, ``127.0.0.1`` and ``::1``, plus ``hostnames`` and
    ``ips`` (duplicates dropped).

    Args:
        hostnames: extra DNS names (e.g. the host name).
        ips: extra IP addresses, as strings.
        validity: how long the certificate is valid (from one hour ago).

    Returns:
        ``(cert_pem, key_pem)``; the key is an unencrypted PKCS#8 EC P-256 key.

    Raises:
        ConfigError: an entry of ``ips`` is not an IP address, or a host name is not ASCII/IDNA.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    names, addrs = _subject_alt_names(hostnames, ips)
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
        .not_valid_after(now - _BACKDATE + validity)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(), critical=True)
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


def _subject_alt_names(
    hostnames: Sequence[str], ips: Sequence[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """DNS names and IP addresses for a certificate: localhost and loopback first, no repeats."""
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
    return names, addrs


def _key_usage() -> Any:
    """digitalSignature + keyCertSign (a self-signed server certificate is its own CA)."""
    from cryptography import x509

    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=True,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


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


# --------------------------------------------------------------------------------------------
# The persistent listener certificate in <stateDir>/tls/


@dataclass(frozen=True, slots=True)
class ListenerCertificate:
    """The listener's self-signed certificate on disk (:func:`ensure_listener_certificate`).

    Attributes:
        cert_path: the PEM certificate (0644).
        key_path: the PEM private key (0600).
        fingerprint: ``sha256:<hex>`` of the DER certificate.
        created: a new pair was written (first start, or a replaced pair).
        warnings: what was wrong and has been repaired (for the caller to log).
    """

    cert_path: Path
    key_path: Path
    fingerprint: str
    created: bool
    warnings: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able form (the daemon's helper process prints it)."""
        return {
            "certPath": str(self.cert_path),
            "created": self.created,
            "fingerprint": self.fingerprint,
            "keyPath": str(self.key_path),
            "warnings": list(self.warnings),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ListenerCertificate:
        """Read :meth:`to_dict` output back.

        Raises:
            ValueError: a field is missing or has the wrong type.
        """
        cert, key, fp = data.get("certPath"), data.get("keyPath"), data.get("fingerprint")
        created, warnings = data.get("created"), data.get("warnings")
        if not (isinstance(cert, str) and isinstance(key, str) and isinstance(fp, str)):
            raise ValueError("expected certPath, keyPath and fingerprint strings")
        if not isinstance(created, bool) or not isinstance(warnings, list):
            raise ValueError("expected created (boolean) and warnings (list)")
        return cls(Path(cert), Path(key), fp, created, tuple(str(w) for w in warnings))


def tls_dir(state_dir: str | Path) -> Path:
    """``<stateDir>/tls``: where the daemon keeps its self-signed certificate."""
    return Path(state_dir) / TLS_DIR_NAME


def ensure_listener_certificate(
    directory: Path,
    hostnames: Sequence[str] = (),
    *,
    now: datetime.datetime | None = None,
) -> ListenerCertificate:
    """Reuse the self-signed listener certificate in ``directory``, or generate it once.

    The pair is reused when the certificate parses, the key parses and matches it, and it is
    valid for more than :data:`RENEW_BEFORE`. Otherwise a new pair (valid for
    :data:`PERSISTENT_VALIDITY`) replaces it, and the reason is returned in ``warnings``; a
    missing pair on first start is not a warning. The key is written first, then the
    certificate, each atomically, while holding an exclusive lock on ``directory/.lock``.

    Args:
        directory: ``<stateDir>/tls``; created with mode 0700 (an existing one is set to 0700).
        hostnames: extra DNS names for a new certificate; a name that cannot go into a
            certificate is left out with a warning.
        now: the current time (for tests); default: now.

    Returns:
        Where the pair is and its fingerprint.

    Raises:
        ConfigError: the directory or files cannot be created or written (path and OS error).
    """
    warnings: list[str] = []
    lock_fd = _private_dir_lock(directory)
    cert_path, key_path = directory / CERT_FILE, directory / KEY_FILE
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        problem = _pair_problem(cert_path, key_path, now or datetime.datetime.now(datetime.UTC))
        if problem is None:
            return _reuse(cert_path, key_path)
        if problem != "missing":
            warnings.append(f"{problem}; generated a new self-signed certificate")
        try:
            cert_pem, key_pem = self_signed(hostnames, validity=PERSISTENT_VALIDITY)
        except ConfigError:
            warnings.append("the host name is not usable in a certificate; leaving it out")
            cert_pem, key_pem = self_signed(validity=PERSISTENT_VALIDITY)
        atomic_write(key_path, key_pem, mode=0o600)
        atomic_write(cert_path, cert_pem, mode=0o644)
    except OSError as exc:
        raise ConfigError(
            f"listener certificate: expected to write {directory}, got {exc.strerror or exc}"
        ) from exc
    finally:
        os.close(lock_fd)  # also releases the lock
    return ListenerCertificate(
        cert_path,
        key_path,
        fingerprint_pem(cert_pem, what=str(cert_path)),
        True,
        tuple(warnings),
    )


def _reuse(cert_path: Path, key_path: Path) -> ListenerCertificate:
    """The stored pair, with its key's mode repaired to 0600 when others could read it."""
    warnings: list[str] = []
    if stat.S_IMODE(key_path.stat().st_mode) & 0o077:
        os.chmod(key_path, 0o600)
        warnings.append(f"{key_path} was readable by others; its mode is now 0600")
    return ListenerCertificate(
        cert_path,
        key_path,
        fingerprint_pem(cert_path.read_bytes(), what=str(cert_path)),
        False,
        tuple(warnings),
    )


def _private_dir_lock(directory: Path) -> int:
    """Create ``directory`` (mode 0700) and open its lock file; the descriptor to lock."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if stat.S_IMODE(directory.stat().st_mode) != 0o700:
            os.chmod(directory, 0o700)
        return os.open(directory / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"listener certificate: expected a writable directory {directory}, "
            f"got {exc.strerror or exc}"
        ) from exc


def _pair_problem(cert_path: Path, key_path: Path, now: datetime.datetime) -> str | None:
    """Why the stored pair cannot be reused ("missing" when neither file exists), or None."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if not cert_path.exists() and not key_path.exists():
        return "missing"
    for path in (cert_path, key_path):
        if not path.is_file():
            return f"{path} is missing"
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return f"{cert_path} is not a PEM certificate"
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        return f"{key_path} is not an unencrypted PEM private key"
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        return f"{key_path} does not match {cert_path}"
    not_after = cert.not_valid_after_utc
    if not_after - RENEW_BEFORE <= now:
        return f"{cert_path} expires at {not_after.isoformat()}"
    return None


def listener_fingerprint(*, cert_path: str = "", cert_b64: str = "", state_dir: str = "") -> str:
    """The fingerprint of the certificate the daemon serves (what ``agent fingerprint`` prints).

    Args:
        cert_path: ``run.tlsCertificatePath`` (wins when set).
        cert_b64: ``run.tlsCertificateBase64``.
        state_dir: ``run.stateDir``: the self-signed certificate is ``<stateDir>/tls/cert.pem``.

    Returns:
        ``sha256:<hex>`` of the first certificate.

    Raises:
        ConfigError: the certificate does not exist yet (hint: start ``agent run`` once) or
            cannot be read.
    """
    if cert_path:
        path, what = Path(os.path.expanduser(cert_path)), "run.tlsCertificatePath"
    elif cert_b64:
        pem = _decode_material(cert_b64, "run.tlsCertificateBase64", key=False)
        return fingerprint_pem(pem, what="run.tlsCertificateBase64")
    else:
        path, what = tls_dir(state_dir or ".") / CERT_FILE, "listener certificate"
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        hint = None if cert_path else "start `agent run` once to generate it"
        raise ConfigError(f"{what}: expected a certificate at {path}, got no file", hint) from exc
    except OSError as exc:
        raise ConfigError(
            f"{what}: expected a readable certificate at {path}, got {exc.strerror or exc}"
        ) from exc
    return fingerprint_pem(data, what=f"{what} {path}")
