"""The std.native functions (reference §7.1) with Etcha's bugs fixed."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import os
import platform
import socket
import ssl
import string
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from support import REPO

from agent.core.errors import RenderError
from agent.jsonnet import natives as jsonnet
from agent.jsonnet.engine import evaluate_text
from agent.jsonnet.natives import NativeContext, make_natives
from agent.jsonnet.sandbox import render_files
from agent.jsonnet.sysinfo import go_arch


def _render(src: str, ctx: NativeContext | None = None, natives: Any = None) -> Any:
    n = natives if natives is not None else make_natives(ctx or NativeContext())
    return render_files("/main.jsonnet", {"/main.jsonnet": src}, natives=n)


# -- HTTP test server ------------------------------------------------------------------------


@dataclass
class _Served:
    url: str
    requests: list[dict[str, str]] = field(default_factory=list)
    body: bytes = b"  counter  \n"
    status: int = 200


@pytest.fixture
def http_server() -> Iterator[_Served]:
    yield from _serve(tls=None)


@pytest.fixture
def tls_cert(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@pytest.fixture
def https_server(tls_cert: tuple[Path, Path]) -> Iterator[_Served]:
    yield from _serve(tls=tls_cert)


def _serve(tls: tuple[Path, Path] | None) -> Iterator[_Served]:
    served = _Served(url="")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.requests.append({"path": self.path, **{k: v for k, v in self.headers.items()}})
            body = served.body.replace(b"counter", str(len(served.requests)).encode())
            self.send_response(served.status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    scheme = "http"
    if tls is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(tls[0]), str(tls[1]))
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    served.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield served
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# -- DNS test server -------------------------------------------------------------------------

_ZONE: dict[tuple[str, str], list[str]] = {
    ("host.test.", "A"): ["10.0.0.2", "10.0.0.1"],
    ("host.test.", "AAAA"): ["fd00::2", "fd00::1"],
    ("txt.test.", "TXT"): ['"v=spf1 -all"', '"another" " joined"'],
    ("target.test.", "A"): ["10.9.9.9"],
}
_CNAMES = {"alias.test.": "target.test."}


@dataclass
class _Dns:
    port: int
    queries: list[tuple[str, str]] = field(default_factory=list)


@pytest.fixture
def dns_server() -> Iterator[_Dns]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    state = _Dns(port=sock.getsockname()[1])
    stop = threading.Event()

    def answer(data: bytes) -> bytes:
        query = dns.message.from_wire(data)
        question = query.question[0]
        qname, qtype = question.name.to_text(), dns.rdatatype.to_text(question.rdtype)
        state.queries.append((qname, qtype))
        response = dns.message.make_response(query)
        if qname in _CNAMES:
            target = _CNAMES[qname]
            response.answer.append(dns.rrset.from_text(qname, 60, "IN", "CNAME", target))
            qname = target
        values = _ZONE.get((qname, qtype))
        if values:
            response.answer.append(dns.rrset.from_text_list(qname, 60, "IN", qtype, values))
        elif not any(name == qname for name, _ in _ZONE):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def loop() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            sock.sendto(answer(data), addr)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        stop.set()
        thread.join()
        sock.close()


def _dns_ctx(server: _Dns, **kwargs: Any) -> NativeContext:
    return NativeContext(dns_server="127.0.0.1", dns_port=server.port, http_timeout=3, **kwargs)


# -- regression: the C++ binding's parameter bug -----------------------------------------------


def test_native_with_two_multi_letter_parameters() -> None:
    # The C++ jsonnet 0.22.0 binding fails with "binding parameter a second time".
    callbacks = {"join": (("first", "second"), lambda first, second: f"{first}-{second}")}
    assert (
        evaluate_text('std.native("join")("ab", "cd")', "x", native_callbacks=callbacks) == "ab-cd"
    )
    assert _render('std.native("regexMatch")("^a+$", "aaa")') is True


# -- simple natives --------------------------------------------------------------------------


def test_get_arch_uses_go_names() -> None:
    arch = _render("std.native('getArch')()")
    assert arch == go_arch(platform.machine())
    assert arch in {"amd64", "arm64", "386", "arm", "ppc64le", "s390x", "riscv64"}
    assert (go_arch("x86_64"), go_arch("aarch64"), go_arch("i686"), go_arch("armv7l")) == (
        "amd64",
        "arm64",
        "386",
        "arm",
    )


def test_get_os_is_go_goos() -> None:
    assert _render("std.native('getOS')()") == "linux"


def test_get_config_returns_the_config_view() -> None:
    view = {"exec": {"command": "/bin/sh -c"}, "vars": {"a": (1, 2)}, "targets": {"t": {}}}
    out = _render("std.native('getConfig')()", NativeContext(config_view=view))
    assert out == {"exec": {"command": "/bin/sh -c"}, "vars": {"a": [1, 2]}, "targets": {"t": {}}}


def test_get_path_returns_entry_dir() -> None:
    assert _render("std.native('getPath')()", NativeContext(entry_dir="/srv/p")) == "/srv/p"
    assert _render("std.native('getPath')()") == ""


def test_get_env_reads_process_env_when_no_env_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_T_VAR", "a=b=c")
    assert _render("std.native('getEnv')('AGENT_T_VAR', null)") == "a=b=c"


def test_get_env_with_env_map_ignores_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_T_INHERIT", "from-process")
    ctx = NativeContext(env={"KEY": "x=y", "EMPTY": ""})
    assert _render("std.native('getEnv')('KEY', null)", ctx) == "x=y"
    assert _render("std.native('getEnv')('AGENT_T_INHERIT', '')", ctx) == ""
    assert _render("std.native('getEnv')('EMPTY', 'fb')", ctx) == "fb"
    assert _render("std.native('getEnv')('EMPTY', 7)", ctx) == 7


def test_native_with_array_argument_explains_the_binding_limit() -> None:
    with pytest.raises(RenderError, match="cannot pass arrays or objects") as err:
        _render("std.native('getEnv')('AGENT_T_NONE', {a: 1})")
    assert "/main.jsonnet:1" in str(err.value)


def test_get_env_without_value_or_fallback_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENT_T_UNSET", raising=False)
    with pytest.raises(RenderError) as err:
        _render("std.native('getEnv')('AGENT_T_UNSET', null)")
    assert "no value found for AGENT_T_UNSET and no fallback provided" in str(err.value)
    assert "/main.jsonnet:1" in str(err.value)


def test_rand_str_is_alphanumeric_of_given_length() -> None:
    a, b = _render("[std.native('randStr')(24), std.native('randStr')(24)]")
    assert len(a) == 24 and set(a) <= set(string.ascii_letters + string.digits)
    assert a != b
    with pytest.raises(RenderError, match="randStr"):
        _render("std.native('randStr')(-1)")


def test_regex_match_searches_and_rejects_invalid_regex() -> None:
    assert _render("std.native('regexMatch')('b+', 'abbbc')") is True
    assert _render("std.native('regexMatch')('^b', 'abc')") is False
    with pytest.raises(RenderError, match="invalid regex"):
        _render("std.native('regexMatch')('(', 'abc')")


def test_render_native_uses_same_natives_and_file_set() -> None:
    files = {
        "/p/main.jsonnet": "std.native('render')(importstr 'tpl.jsonnet')",
        "/p/tpl.jsonnet": "{path: std.native('getPath')(), lib: import 'lib.libsonnet'}",
        "/p/lib.libsonnet": "{x: 1}",
    }
    natives = make_natives(NativeContext(entry_dir="/abs/p"))
    assert render_files("/p/main.jsonnet", files, natives=natives) == {
        "path": "/abs/p",
        "lib": {"x": 1},
    }


def test_render_native_error_is_reported() -> None:
    with pytest.raises(RenderError, match="inner failure"):
        _render("std.native('render')('error \"inner failure\"')")


# -- getFile ---------------------------------------------------------------------------------


def test_get_file_reads_local_file_trimmed(tmp_path: Path) -> None:
    f = tmp_path / "value.txt"
    f.write_text("\n  hello world \n")
    assert _render(f"std.native('getFile')('{f}', null)") == "hello world"
    assert _render(f"std.native('getFile')('file://{f}', null)") == "hello world"


def test_get_file_missing_uses_fallback_or_errors(tmp_path: Path) -> None:
    missing = tmp_path / "missing.txt"
    assert _render(f"std.native('getFile')('{missing}', 'fb')") == "fb"
    with pytest.raises(RenderError, match=r"getFile"):
        _render(f"std.native('getFile')('{missing}', null)")


def test_get_file_on_a_directory_names_the_path_and_os_error(tmp_path: Path) -> None:
    with pytest.raises(RenderError) as err:
        _render(f"std.native('getFile')('{tmp_path}', null)")
    assert f"getFile {tmp_path}: expected a readable file, got Is a directory" in str(err.value)
    assert _render(f"std.native('getFile')('{tmp_path}', 'fb')") == "fb"


def test_get_file_http_caches_within_one_render(http_server: _Served) -> None:
    src = f"[std.native('getFile')('{http_server.url}/c', null)," * 1
    src += f" std.native('getFile')('{http_server.url}/c', null)]"
    natives = make_natives(NativeContext())
    assert _render(src, natives=natives) == ["1", "1"]
    assert len(http_server.requests) == 1
    # The same Natives object keeps its cache; a new one starts empty.
    assert _render(src, natives=natives) == ["1", "1"]
    assert len(http_server.requests) == 1
    assert _render(src) == ["2", "2"]
    assert len(http_server.requests) == 2


def test_get_file_http_sends_headers_and_pseudo_headers_are_not_sent(
    http_server: _Served,
) -> None:
    spec = f"{http_server.url}/h#X-Token:abc\\r\\nX-Multi:1\\r\\nX-Multi:2\\r\\nclientTimeout:5"
    assert _render(f"std.native('getFile')('{spec}', null)") == "1"
    request = http_server.requests[0]
    assert request["path"] == "/h"
    assert request["X-Token"] == "abc"
    assert request["X-Multi"] == "1, 2"
    assert "clientTimeout" not in request


def test_get_file_http_bad_status_uses_fallback_or_errors_without_secrets(
    http_server: _Served,
) -> None:
    http_server.status = 404
    spec = f"{http_server.url}/x?token=s3cr3t#Authorization:Bearer s3cr3t"
    assert _render(f"std.native('getFile')('{spec}', 'fb')") == "fb"
    with pytest.raises(RenderError) as err:
        _render(f"std.native('getFile')('{spec}', null)")
    assert "404" in str(err.value)
    assert "s3cr3t" not in str(err.value)


def test_get_file_http_body_is_bounded(
    http_server: _Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonnet, "MAX_FETCH_BYTES", 8)
    http_server.body = b"0123456789"
    with pytest.raises(RenderError, match="at most 8 bytes"):
        _render(f"std.native('getFile')('{http_server.url}/big', null)")


def test_get_file_disabled_external_errors_but_fallback_applies(http_server: _Served) -> None:
    ctx = NativeContext(disable_external=True)
    with pytest.raises(RenderError, match="external native functions are disabled"):
        _render(f"std.native('getFile')('{http_server.url}/x', null)", ctx)
    assert _render(f"std.native('getFile')('{http_server.url}/x', 'fb')", ctx) == "fb"
    assert http_server.requests == []


def test_get_file_disabled_external_still_reads_local_files(tmp_path: Path) -> None:
    (tmp_path / "v").write_text("local")
    ctx = NativeContext(disable_external=True)
    assert _render(f"std.native('getFile')('{tmp_path / 'v'}', null)", ctx) == "local"


def test_get_file_https_verifies_certificates(
    https_server: _Served, tls_cert: tuple[Path, Path]
) -> None:
    url = f"{https_server.url}/s"
    with pytest.raises(RenderError, match="CERTIFICATE_VERIFY_FAILED"):
        _render(f"std.native('getFile')('{url}', null)")
    assert _render(f"std.native('getFile')('{url}#clientSkipVerify', null)") == "1"
    assert _render(f"std.native('getFile')('{url}#skipVerify', null)") == "2"
    assert (
        _render(f"std.native('getFile')('{url}', null)", NativeContext(tls_skip_verify=True)) == "3"
    )
    ctx = NativeContext(ca_file=str(tls_cert[0]))
    assert _render(f"std.native('getFile')('{url}', null)", ctx) == "4"


# -- getRecord -------------------------------------------------------------------------------


def test_get_record_resolves_sorted_records(dns_server: _Dns) -> None:
    out = _render(
        "{a: std.native('getRecord')('a', 'host.test', null),"
        " aaaa: std.native('getRecord')('AAAA', 'host.test', null),"
        " cname: std.native('getRecord')('cname', 'alias.test', null),"
        " txt: std.native('getRecord')('txt', 'txt.test', null)}",
        _dns_ctx(dns_server),
    )
    assert out == {
        "a": ["10.0.0.1", "10.0.0.2"],
        "aaaa": ["fd00::1", "fd00::2"],
        "cname": ["target.test."],
        "txt": ["another joined", "v=spf1 -all"],
    }


def test_get_record_caches_within_one_render(dns_server: _Dns) -> None:
    src = "[std.native('getRecord')('a', 'host.test', null) for i in [1, 2, 3]]"
    assert _render(src, _dns_ctx(dns_server)) == [["10.0.0.1", "10.0.0.2"]] * 3
    assert dns_server.queries == [("host.test.", "A")]


def test_get_record_unknown_name_uses_fallback_or_errors(dns_server: _Dns) -> None:
    ctx = _dns_ctx(dns_server)
    assert _render("std.native('getRecord')('a', 'nope.test', 'fb')", ctx) == "fb"
    with pytest.raises(RenderError, match="error resolving record"):
        _render("std.native('getRecord')('a', 'nope.test', null)", ctx)
    with pytest.raises(RenderError, match="expected type a, aaaa, cname or txt"):
        _render("std.native('getRecord')('mx', 'host.test', null)", ctx)


def test_get_record_disabled_external(dns_server: _Dns) -> None:
    ctx = _dns_ctx(dns_server, disable_external=True)
    with pytest.raises(RenderError, match="external native functions are disabled"):
        _render("std.native('getRecord')('a', 'host.test', null)", ctx)
    assert _render("std.native('getRecord')('a', 'host.test', 'fb')", ctx) == "fb"
    assert dns_server.queries == []


def test_get_record_system_resolver_reads_hosts_file() -> None:
    assert "127.0.0.1" in _render("std.native('getRecord')('a', 'localhost', null)")


# -- imports ---------------------------------------------------------------------------------


def test_rendering_with_natives_does_not_import_aiohttp_or_dns(http_server: _Served) -> None:
    code = (
        "import sys\n"
        "from agent.jsonnet.natives import NativeContext, make_natives\n"
        "from agent.jsonnet.sandbox import render_files\n"
        f"src = \"std.native('getFile')('{http_server.url}/x', null)\"\n"
        "print(render_files('main.jsonnet', {'main.jsonnet': src},"
        " natives=make_natives(NativeContext())))\n"
        "print(sorted(m for m in ('aiohttp', 'dns', 'dns.resolver') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert out.stdout.splitlines() == ["1", "[]"]
