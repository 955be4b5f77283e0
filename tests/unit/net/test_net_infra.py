"""One of each piece of infrastructure (issue 13, contract 5): the one HTTP client and TLS-context
builder used by getFile, copy, jwt <url> and push; the one atomic writer; the one token equality.

Servers are real HTTP(S) servers on 127.0.0.1 with a fresh self-signed certificate.
"""

from __future__ import annotations

import http.server
import os
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import tls_http_server

from agent.core.atomicio import atomic_write
from agent.core.errors import CommandError, ConfigError, RenderError
from agent.jsonnet.natives import NativeContext, make_natives
from agent.jsonnet.sandbox import render_files
from agent.jws.compare import same_pattern, token_difference
from agent.jws.keys import generate_keys, parse_signing_key, parse_verify_key
from agent.jws.tokens import VerifiedToken, etcha_claims, sign_token, verify_token
from agent.net.http import HTTPClient
from agent.net.tls import TLSOptions, client_context
from agent.net.tlsutil import self_signed
from agent.tools.helpers.copy import read_source

BODY = b"served-over-tls"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path, str]]:
    """An HTTPS server: yields (base URL, its certificate file, its fingerprint)."""
    with tls_http_server(tmp_path_factory.mktemp("tls"), _Handler) as (port, cert, fingerprint):
        yield f"https://127.0.0.1:{port}", cert, fingerprint


def _other_ca(tmp_path: Path) -> Path:
    other = tmp_path / "other.pem"
    other.write_bytes(self_signed()[0])
    return other


# ----------------------------------------------------------------------- TLS-context builder


def test_ca_store_is_not_loaded_with_skip_verify_or_a_fingerprint(tmp_path: Path) -> None:
    for options in (TLSOptions(skip_verify=True), TLSOptions(fingerprint="sha256:" + "ab" * 32)):
        ctx = client_context(options)
        assert ctx.cert_store_stats()["x509"] == 0
        assert ctx.verify_mode == ssl.CERT_NONE
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


def test_ca_file_with_no_system_ca_loads_only_the_ca_file(tmp_path: Path) -> None:
    ctx = client_context(TLSOptions(ca_file=str(_other_ca(tmp_path)), no_system_ca=True))
    assert ctx.cert_store_stats()["x509"] == 1
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


# ------------------------------------------------------------------------------- getFile


def _get_file(url: str, ctx: NativeContext) -> object:
    src = f"std.native('getFile')('{url}', null)"
    return render_files("/main.jsonnet", {"/main.jsonnet": src}, natives=make_natives(ctx))


def test_get_file_trusts_the_ca_file_with_no_system_ca(
    tls_server: tuple[str, Path, str],
) -> None:
    base, cert, _ = tls_server
    ctx = NativeContext(ca_file=str(cert), no_system_ca=True)
    assert _get_file(f"{base}/x", ctx) == BODY.decode()


def test_get_file_with_no_system_ca_refuses_a_server_outside_the_ca_file(
    tls_server: tuple[str, Path, str], tmp_path: Path
) -> None:
    base, _, _ = tls_server
    ctx = NativeContext(ca_file=str(_other_ca(tmp_path)), no_system_ca=True)
    with pytest.raises(RenderError, match="CERTIFICATE_VERIFY_FAILED"):
        _get_file(f"{base}/x", ctx)


def test_get_file_no_system_ca_without_ca_file_is_refused(
    tls_server: tuple[str, Path, str],
) -> None:
    base, _, _ = tls_server
    with pytest.raises(RenderError, match=r"httpClient\.noSystemCA"):
        _get_file(f"{base}/x", NativeContext(no_system_ca=True))


def test_the_one_client_requires_tls_1_2() -> None:
    for options in (TLSOptions(), TLSOptions(skip_verify=True)):
        ctx = HTTPClient(options).context()
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2


# ---------------------------------------------------------------------------------- copy


def test_copy_reads_an_https_url_trusted_by_ca_file(
    tls_server: tuple[str, Path, str], tmp_path: Path
) -> None:
    base, cert, _ = tls_server
    with pytest.raises(CommandError, match="CERTIFICATE_VERIFY_FAILED"):
        read_source(f"{base}/data")
    client = HTTPClient(TLSOptions(ca_file=str(cert), no_system_ca=True))
    assert read_source(f"{base}/data", client=client) == BODY
    refused = HTTPClient(TLSOptions(ca_file=str(_other_ca(tmp_path)), no_system_ca=True))
    with pytest.raises(CommandError, match="CERTIFICATE_VERIFY_FAILED"):
        read_source(f"{base}/data", client=refused)


def test_fingerprint_pin_needs_no_ca(tls_server: tuple[str, Path, str]) -> None:
    base, _, fingerprint = tls_server
    client = HTTPClient(TLSOptions(no_system_ca=True, ca_file="/nonexistent"))
    resp = client.request(f"{base}/x", max_bytes=100, fingerprint=fingerprint)
    assert resp.status == 200 and resp.body == BODY


# ---------------------------------------------------------------------------- jwt <url>


def _agent(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "ETCHA_"))}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_jwt_url_honours_http_client_ca_file(
    tls_server: tuple[str, Path, str], tmp_path: Path
) -> None:
    base, cert, _ = tls_server
    untrusted = _agent("jwt", f"{base}/t.jwt", cwd=tmp_path)
    assert untrusted.returncode == 1
    assert untrusted.stderr.startswith("ERROR: error opening src"), untrusted.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    trusted = _agent("-x", f"httpClient_caFile={cert}", "jwt", f"{base}/t.jwt", cwd=tmp_path)
    # The body was read (it is no token, so decoding fails after the read).
    assert "error opening src" not in trusted.stderr, trusted.stderr


def test_copy_cli_honours_http_client_ca_file(
    tls_server: tuple[str, Path, str], tmp_path: Path
) -> None:
    base, cert, _ = tls_server
    dst = tmp_path / "copied"
    untrusted = _agent("copy", "change", f"{base}/data", str(dst), cwd=tmp_path)
    assert untrusted.returncode == 1
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.stderr
    assert not dst.exists()
    trusted = _agent(
        "-x", f"httpClient_caFile={cert}", "copy", "change", f"{base}/data", str(dst), cwd=tmp_path
    )
    assert trusted.returncode == 0, trusted.stderr
    assert dst.read_bytes() == BODY


# --------------------------------------------------------------------------------- push


def test_push_does_not_import_aiohttp(tmp_path: Path) -> None:
    private, _ = generate_keys("ed25519", "k")
    code = (
        "import sys\n"
        "from agent.cli import main\n"
        f"rc = main(['-x', 'build_signingKey={private}', 'push', '-h', 'http://127.0.0.1:9',"
        " 'core', 'true'])\n"
        "print('RC=%s AIOHTTP=%s' % (rc, 'aiohttp' in sys.modules))\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60
    )
    assert "RC=1 AIOHTTP=False" in res.stdout, res.stdout + res.stderr
    assert "error performing request" in res.stdout


# -------------------------------------------------------------------------- atomic writer


def test_atomic_write_sets_owner_and_mode(tmp_path: Path) -> None:
    target = tmp_path / "f"
    atomic_write(target, "x", mode=0o640, owner=(os.getuid(), os.getgid()))
    st = target.stat()
    assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (0o640, os.getuid(), os.getgid())
    assert target.read_text() == "x"
    atomic_write(target, b"y", mode=0o600, owner=(-1, -1))
    assert target.read_bytes() == b"y" and target.stat().st_mode & 0o777 == 0o600


def test_atomic_write_into_a_missing_directory_raises_and_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        atomic_write(tmp_path / "missing" / "f", "x")
    assert not (tmp_path / "missing").exists()


# ------------------------------------------------------------------------ token equality


def _verified(
    files: dict[str, str], *, version: str, manifest: str = "", iat: float
) -> VerifiedToken:
    private, public = generate_keys("ed25519", "k")
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files=files,
        build_manifest=manifest,
        run_vars={"n": iat},
        version=version,
        now=iat,
    )
    return verify_token(sign_token(claims, parse_signing_key(private)), [parse_verify_key(public)])


def test_bad_ca_file_is_a_config_error_before_any_request(tmp_path: Path) -> None:
    client = HTTPClient(TLSOptions(ca_file=str(tmp_path / "missing.pem")))
    with pytest.raises(ConfigError, match=r"httpClient\.caFile"):
        client.context()


def test_same_pattern_and_token_difference_compare_manifest_version_and_files() -> None:
    now = time.time()
    files = {"/main.jsonnet": "{run: []}"}
    base = _verified(files, version="v1", iat=now)
    later = _verified(files, version="v1", iat=now + 5)  # other runVars and iat: same pattern
    other_version = _verified(files, version="v2", iat=now)
    other_manifest = _verified(files, version="v1", manifest="m\n", iat=now)
    other_files = _verified({"/main.jsonnet": "{}"}, version="v1", iat=now)
    assert same_pattern(base, later, ignore_version=False)
    assert token_difference(later, base, ignore_version=False) is None
    assert not same_pattern(base, other_version, ignore_version=False)
    assert same_pattern(base, other_version, ignore_version=True)
    assert not same_pattern(base, other_manifest, ignore_version=True)
    assert not same_pattern(base, other_files, ignore_version=True)
    diff = token_difference(other_files, base, ignore_version=True)
    assert diff is not None and diff[0] == "etchaPattern differs" and "+" in diff[1]
    assert token_difference(other_version, base, ignore_version=False) == (
        "etchaVersion differs",
        "--- old etchaVersion\n+++ new etchaVersion\n@@ -1 +1 @@\n-v1\n+v2",
    )
