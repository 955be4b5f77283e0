"""Self-signed certificates and the listener SSL context, against a real TLS server."""

from __future__ import annotations

import asyncio
import base64
import datetime
import ipaddress
import logging
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.core.errors import ConfigError
from agent.net.tlsutil import (
    PERSISTENT_VALIDITY,
    ensure_listener_certificate,
    fingerprint_pem,
    listener_fingerprint,
    self_signed,
    server_ssl_context,
)


@asynccontextmanager
async def serve_tls(ctx: ssl.SSLContext) -> AsyncIterator[int]:
    async def hello(_: web.Request) -> web.Response:
        return web.Response(text="hello")

    app = web.Application()
    app.router.add_get("/", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    site = web.SockSite(runner, sock, ssl_context=ctx)
    await site.start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _get(port: int, client: ssl.SSLContext | bool, server_hostname: str | None) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"https://127.0.0.1:{port}/", ssl=client, server_hostname=server_hostname
        ) as resp,
    ):
        return await resp.text()


def _client_trusting(cert_pem: bytes, tmp_path: Path) -> ssl.SSLContext:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(cert_pem)
    return ssl.create_default_context(cafile=str(ca))


def test_self_signed_cert_has_expected_sans_cn_key_and_validity() -> None:
    cert_pem, key_pem = self_signed(["myhost"], ["10.1.2.3"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.curve.name == "secp256r1"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "agent"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "myhost"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
        ipaddress.ip_address("10.1.2.3"),
    ]
    now = datetime.datetime.now(datetime.UTC)
    back = now - cert.not_valid_before_utc
    assert datetime.timedelta(minutes=59) < back < datetime.timedelta(minutes=61)
    life = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert life == datetime.timedelta(days=365)


def test_self_signed_drops_duplicate_names() -> None:
    cert_pem, _ = self_signed(["localhost", "LOCALHOST", "h"], ["127.0.0.1"])
    san = x509.load_pem_x509_certificate(cert_pem).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["localhost", "h"]
    assert len(san.value.get_values_for_type(x509.IPAddress)) == 2


def test_self_signed_rejects_a_bad_ip() -> None:
    with pytest.raises(ConfigError, match="expected an IPv4 or IPv6 address, got 'nope'"):
        self_signed([], ["nope"])


def test_default_context_is_self_signed_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.net.tlsutil"):
        ctx = server_ssl_context(hostname="build-host")
    assert "Generating self-signed certificate for listener" in caplog.text
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_client_trusting_the_self_signed_cert_verifies_127_0_0_1_and_localhost(
    tmp_path: Path,
) -> None:
    cert_pem, key_pem = self_signed(["myhost"])
    cert_file, key_file = tmp_path / "c.pem", tmp_path / "k.pem"
    cert_file.write_bytes(cert_pem)
    key_file.write_bytes(key_pem)
    server = server_ssl_context(cert_path=str(cert_file), key_path=str(key_file))
    client = _client_trusting(cert_pem, tmp_path)

    async def main() -> None:
        async with serve_tls(server) as port:
            assert await _get(port, client, None) == "hello"  # verifies 127.0.0.1
            assert await _get(port, client, "localhost") == "hello"
            assert await _get(port, client, "myhost") == "hello"
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await _get(port, client, "other.invalid")

    asyncio.run(main())


def test_generated_listener_cert_is_served_and_rejected_by_default_trust(tmp_path: Path) -> None:
    server = server_ssl_context()

    async def main() -> None:
        async with serve_tls(server) as port:
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                await _get(port, ssl.create_default_context(), None)
            assert await _get(port, False, None) == "hello"
            # The certificate the server presents carries the SANs the client will check.
            loop = asyncio.get_running_loop()
            pem = await loop.run_in_executor(None, ssl.get_server_certificate, ("127.0.0.1", port))
            client = _client_trusting(pem.encode(), tmp_path)
            assert await _get(port, client, "localhost") == "hello"
            assert await _get(port, client, socket.gethostname()) == "hello"

    asyncio.run(main())


def test_base64_pem_pair_is_used(tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed(["b64host"])
    server = server_ssl_context(
        cert_b64=base64.b64encode(cert_pem).decode(), key_b64=base64.b64encode(key_pem).decode()
    )
    client = _client_trusting(cert_pem, tmp_path)

    async def main() -> None:
        async with serve_tls(server) as port:
            assert await _get(port, client, "b64host") == "hello"

    asyncio.run(main())


def test_base64_der_pair_is_used(tmp_path: Path) -> None:
    cert_pem, key_pem = self_signed(["derhost"])
    cert_der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    key = serialization.load_pem_private_key(key_pem, password=None)
    key_der = key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    server = server_ssl_context(
        cert_b64=base64.b64encode(cert_der).decode(), key_b64=base64.b64encode(key_der).decode()
    )
    client = _client_trusting(cert_pem, tmp_path)

    async def main() -> None:
        async with serve_tls(server) as port:
            assert await _get(port, client, "derhost") == "hello"

    asyncio.run(main())


def test_paths_take_priority_over_base64(tmp_path: Path) -> None:
    path_cert, path_key = self_signed(["pathhost"])
    b64_cert, b64_key = self_signed(["b64host"])
    (tmp_path / "c.pem").write_bytes(path_cert)
    (tmp_path / "k.pem").write_bytes(path_key)
    server = server_ssl_context(
        cert_path=str(tmp_path / "c.pem"),
        key_path=str(tmp_path / "k.pem"),
        cert_b64=base64.b64encode(b64_cert).decode(),
        key_b64=base64.b64encode(b64_key).decode(),
    )
    client = _client_trusting(path_cert, tmp_path)

    async def main() -> None:
        async with serve_tls(server) as port:
            assert await _get(port, client, "pathhost") == "hello"

    asyncio.run(main())


def test_temp_pem_files_are_removed_after_loading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    cert_pem, key_pem = self_signed()
    server_ssl_context(
        cert_b64=base64.b64encode(cert_pem).decode(), key_b64=base64.b64encode(key_pem).decode()
    )
    server_ssl_context()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({"cert_path": "/c.pem"}, "run.tlsKeyPath"),
        ({"key_path": "/k.pem"}, "run.tlsCertificatePath"),
        ({"cert_b64": "QUJD"}, "run.tlsKeyBase64"),
        ({"key_b64": "QUJD"}, "run.tlsCertificateBase64"),
        ({"cert_path": "/c", "key_path": "/k", "key_b64": "QUJD"}, "run.tlsCertificateBase64"),
    ],
)
def test_half_configured_pair_is_a_config_error_naming_the_missing_setting(
    kwargs: dict[str, str], missing: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{missing}: expected"):
        server_ssl_context(**kwargs)


def test_unreadable_cert_path_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"run\.tlsCertificatePath/run\.tlsKeyPath"):
        server_ssl_context(cert_path=str(tmp_path / "no.pem"), key_path=str(tmp_path / "no.key"))


def test_mismatched_key_is_a_config_error_without_key_material() -> None:
    cert_pem, _ = self_signed()
    _, other_key = self_signed()
    with pytest.raises(ConfigError) as info:
        server_ssl_context(
            cert_b64=base64.b64encode(cert_pem).decode(),
            key_b64=base64.b64encode(other_key).decode(),
        )
    assert "matching private key" in str(info.value)
    assert "PRIVATE" not in str(info.value)


def test_garbage_base64_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"run.tlsCertificateBase64: expected base64"):
        server_ssl_context(cert_b64="!!!", key_b64="QUJD")
    with pytest.raises(ConfigError, match=r"run.tlsKeyBase64: expected base64 of PEM or DER"):
        cert_pem, _ = self_signed()
        server_ssl_context(cert_b64=base64.b64encode(cert_pem).decode(), key_b64="QUJD")


def test_unusable_machine_host_name_is_left_out_of_the_default_cert(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(socket, "gethostname", lambda: "x" * 70 + ".example")
    ctx = server_ssl_context()
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
    assert "Host name is not usable" in caplog.text


def test_configured_hostname_that_is_not_idna_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="expected an ASCII or IDNA host name"):
        server_ssl_context(hostname="x" * 70 + ".example")


# ------------------------------------------------------------- persistent listener certificate


def _sha256_by_cryptography(cert_pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(cert_pem)
    return "sha256:" + cert.fingerprint(hashes.SHA256()).hex()


def test_fingerprint_is_sha256_of_the_der_certificate_in_lowercase_hex() -> None:
    cert_pem, _ = self_signed()
    got = fingerprint_pem(b"leading text\n" + cert_pem + cert_pem, what="x")
    assert got == _sha256_by_cryptography(cert_pem)
    assert got.startswith("sha256:") and len(got) == 7 + 64 and got == got.lower()


def test_listener_certificate_is_generated_once_then_reused(tmp_path: Path) -> None:
    tls = tmp_path / "state" / "tls"
    first = ensure_listener_certificate(tls, ["myhost"])
    again = ensure_listener_certificate(tls, ["myhost"])
    assert first.created and not again.created
    assert first.warnings == () and again.warnings == ()
    assert again.fingerprint == first.fingerprint
    assert first.fingerprint == _sha256_by_cryptography(first.cert_path.read_bytes())
    assert (tls.stat().st_mode & 0o777) == 0o700
    assert (first.key_path.stat().st_mode & 0o777) == 0o600
    assert (first.cert_path.stat().st_mode & 0o777) == 0o644
    cert = x509.load_pem_x509_certificate(first.cert_path.read_bytes())
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == PERSISTENT_VALIDITY
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "myhost" in san.get_values_for_type(x509.DNSName)
    # The pair is usable by the stdlib server context the daemon builds.
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(first.cert_path, first.key_path)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        ("cert-garbage", "is not a PEM certificate"),
        ("cert-truncated", "is not a PEM certificate"),
        ("key-garbage", "is not an unencrypted PEM private key"),
        ("key-missing", "key.pem is missing"),
        ("cert-missing", "cert.pem is missing"),
        ("key-other", "does not match"),
    ],
)
def test_damaged_pair_is_regenerated_with_a_warning(
    tmp_path: Path, damage: str, reason: str
) -> None:
    tls = tmp_path / "tls"
    first = ensure_listener_certificate(tls)
    what, how = damage.split("-")
    path = first.cert_path if what == "cert" else first.key_path
    if how == "garbage":
        path.write_text("not pem\n")
    elif how == "truncated":
        path.write_bytes(path.read_bytes()[:200])
    elif how == "missing":
        path.unlink()
    else:
        path.write_bytes(self_signed()[1])  # a valid key, but another certificate's
    repaired = ensure_listener_certificate(tls)
    assert repaired.created
    assert len(repaired.warnings) == 1
    assert reason in repaired.warnings[0]
    assert "generated a new self-signed certificate" in repaired.warnings[0]
    assert repaired.fingerprint != first.fingerprint
    assert repaired.fingerprint == _sha256_by_cryptography(repaired.cert_path.read_bytes())
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(repaired.cert_path, repaired.key_path)  # the new pair matches


def test_certificate_close_to_expiry_is_replaced(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = ensure_listener_certificate(tls)
    later = datetime.datetime.now(datetime.UTC) + PERSISTENT_VALIDITY - datetime.timedelta(days=7)
    renewed = ensure_listener_certificate(tls, now=later)
    assert renewed.created and renewed.fingerprint != first.fingerprint
    assert "expires at" in renewed.warnings[0]


def test_key_readable_by_others_is_made_private_with_a_warning(tmp_path: Path) -> None:
    tls = tmp_path / "tls"
    first = ensure_listener_certificate(tls)
    first.key_path.chmod(0o644)
    tls.chmod(0o755)
    again = ensure_listener_certificate(tls)
    assert not again.created and again.fingerprint == first.fingerprint
    assert (again.key_path.stat().st_mode & 0o777) == 0o600
    assert (tls.stat().st_mode & 0o777) == 0o700
    assert "readable by others" in again.warnings[0]


def test_unwritable_tls_directory_is_a_config_error_naming_it(tmp_path: Path) -> None:
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state directory should be")
    with pytest.raises(ConfigError, match=r"expected a writable directory .*state/tls"):
        ensure_listener_certificate(blocker / "tls")


def test_listener_fingerprint_reads_the_state_dir_certificate(tmp_path: Path) -> None:
    cert = ensure_listener_certificate(tmp_path / "tls")
    assert listener_fingerprint(state_dir=str(tmp_path)) == cert.fingerprint


def test_listener_fingerprint_prefers_configured_material(tmp_path: Path) -> None:
    ensure_listener_certificate(tmp_path / "tls")
    cert_pem, _ = self_signed()
    (tmp_path / "c.pem").write_bytes(cert_pem)
    expected = _sha256_by_cryptography(cert_pem)
    by_path = listener_fingerprint(cert_path=str(tmp_path / "c.pem"), state_dir=str(tmp_path))
    b64 = base64.b64encode(cert_pem).decode()
    assert by_path == expected
    assert listener_fingerprint(cert_b64=b64, state_dir=str(tmp_path)) == expected


def test_listener_fingerprint_without_a_certificate_says_to_start_run_once(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match=r"expected a certificate at .*tls/cert\.pem") as err:
        listener_fingerprint(state_dir=str(tmp_path))
    assert err.value.hint is not None and "agent run" in err.value.hint
