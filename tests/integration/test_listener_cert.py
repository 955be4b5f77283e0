"""A real `agent run` on 127.0.0.1 keeps its self-signed certificate, and pushes pin it.

Issue 11 point 6: the certificate survives restarts (same fingerprint, key 0600), the logged
fingerprint is what `agent fingerprint` prints and what the listener presents, and `agent push`
works the first time with `--fingerprint` (no CA, no tlsSkipVerify). Point 4: Etcha's old
`build.pushTargets` and `build.pushTLSSkipVerify` load and route pushes.
"""

from __future__ import annotations

import hashlib
import re
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, daemon, free_port, listener_config, run_agent, write_json

pytestmark = pytest.mark.integration

_LOGGED = re.compile(
    r"Listener certificate fingerprint: (sha256:[0-9a-f]{64}) \(self-signed, (\w+)"
)


#: The recap line of a push to one target that changed something.
RECAP1 = "1 target: 1 changed, 0 unchanged, 0 failed, 0 unreachable\n"


def server_config(tmp: Path, port: int) -> Path:
    """A host with TLS on (no certificate configured) and one push source."""
    return listener_config(tmp, port, {"core": {"allowPush": True}}, tls=True)


def presented_fingerprint(port: int) -> str:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return "sha256:" + hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest()


def logged(log: Path) -> tuple[str, str]:
    match = _LOGGED.search(log.read_text())
    assert match, log.read_text()
    return match.group(1), match.group(2)


def test_certificate_survives_two_restarts_and_agent_fingerprint_prints_it(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = server_config(tmp_path, port)
    seen: list[tuple[str, str, str]] = []
    for start in range(3):
        with daemon(tmp_path, config, port, f"start{start}", clean_exit=True) as (_, log):
            fingerprint, how = logged(log)
            seen.append((fingerprint, how, presented_fingerprint(port)))
    first = seen[0][0]
    assert [s[1] for s in seen] == ["generated", "reused", "reused"]
    assert all(s[0] == first and s[2] == first for s in seen)
    tls = tmp_path / "state" / "tls"
    assert (tls / "key.pem").stat().st_mode & 0o777 == 0o600
    assert tls.stat().st_mode & 0o777 == 0o700
    printed = run_agent("-c", str(config), "fingerprint", cwd=tmp_path)
    assert (printed.returncode, printed.stdout) == (0, first + "\n"), printed.stderr


def test_agent_fingerprint_before_the_first_start_says_to_run_once(tmp_path: Path) -> None:
    config = server_config(tmp_path, free_port())
    proc = run_agent("-c", str(config), "fingerprint", cwd=tmp_path)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "tls/cert.pem" in proc.stderr and "start `agent run` once" in proc.stderr


def test_corrupt_certificate_is_replaced_with_a_warning_not_a_crash(tmp_path: Path) -> None:
    port = free_port()
    config = server_config(tmp_path, port)
    with daemon(tmp_path, config, port, "first", clean_exit=True) as (_, log):
        before, _ = logged(log)
    (tmp_path / "state" / "tls" / "cert.pem").write_text("half-writ")
    with daemon(tmp_path, config, port, "second", clean_exit=True) as (_, log):
        after, how = logged(log)
        assert presented_fingerprint(port) == after
    assert how == "generated" and after != before
    assert "is not a PEM certificate; generated a new self-signed certificate" in log.read_text()


@pytest.fixture
def host(tmp_path: Path) -> Iterator[tuple[int, str]]:
    """A running host: (port, the fingerprint it logged)."""
    port = free_port()
    with daemon(tmp_path, server_config(tmp_path, port), port, "host", clean_exit=True) as (_, log):
        yield port, logged(log)[0]


def push(tmp: Path, client: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    config = write_json(tmp / "client.json", client)
    return run_agent("-c", str(config), "push", *args, cwd=tmp)


SIGNING = {"build": {"signingKey": RIGHT_PRIV}}


def test_push_with_the_fingerprint_works_without_ca_or_skip_verify(
    tmp_path: Path, host: tuple[int, str]
) -> None:
    port, fingerprint = host
    args = ("-h", "127.0.0.1", "-p", str(port), "--fingerprint", fingerprint, "core")
    proc = push(tmp_path, SIGNING, *args, "echo pinned")
    assert (proc.returncode, proc.stdout) == (0, "127.0.0.1:\n    pinned\n" + RECAP1), proc.stderr
    target = {"hostname": "127.0.0.1", "port": port, "fingerprint": fingerprint}
    client = {**SIGNING, "targets": {"h1": {**target, "sourcePatterns": {"core": ""}}}}
    proc = push(tmp_path, client, "core", "echo from-config")
    assert (proc.returncode, proc.stdout) == (0, "h1:\n    from-config\n" + RECAP1), proc.stderr


def test_push_with_a_wrong_fingerprint_names_expected_and_got(
    tmp_path: Path, host: tuple[int, str]
) -> None:
    port, fingerprint = host
    wrong = "sha256:" + "1" * 64
    proc = push(
        tmp_path,
        SIGNING,
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "--fingerprint",
        wrong,
        "core",
        "true",
    )
    assert proc.returncode == 1
    assert f"expected {wrong}, got {fingerprint}" in proc.stdout


def test_push_without_trust_names_the_three_fixes(tmp_path: Path, host: tuple[int, str]) -> None:
    port, _ = host
    proc = push(tmp_path, SIGNING, "-h", "127.0.0.1", "-p", str(port), "core", "true")
    assert proc.returncode == 1
    assert "TLS verification of 127.0.0.1:" in proc.stdout
    for fix in ("httpClient.caFile", "fingerprint", "httpClient.tlsSkipVerify"):
        assert fix in proc.stdout, fix


def test_etcha_push_targets_and_push_tls_skip_verify_route_a_push(
    tmp_path: Path, host: tuple[int, str]
) -> None:
    port, _ = host
    client = {
        "build": {
            "signingKey": RIGHT_PRIV,
            "pushTLSSkipVerify": True,
            "pushTargets": {
                "web": {"hostname": "127.0.0.1", "port": port, "sources": ["core"]},
                # Not listing core: pushing core must not reach it (it would fail: no listener).
                "other": {"hostname": "127.0.0.1", "port": free_port(), "sources": ["data"]},
            },
        }
    }
    proc = push(tmp_path, client, "core", "echo old-form")
    assert (proc.returncode, proc.stdout) == (0, "web:\n    old-form\n" + RECAP1), proc.stderr
    assert '"build.pushTLSSkipVerify"' in proc.stderr and "old name" in proc.stderr
    assert '"build.pushTargets"' in proc.stderr


def test_stdlib_pattern_push_over_tls_succeeds_20_of_20(tmp_path: Path) -> None:
    """Issue 12 point 1: a ~21 KB token (the packaged standard library) pushed over TLS arrives
    in several TLS records; it failed 14 of 14 times when the body was read in one call."""
    port = free_port()
    config = server_config(tmp_path, port)
    target = tmp_path / "motd"
    pattern = tmp_path / "motd.jsonnet"
    pattern.write_text(
        "local etcha = import 'etcha/etcha.libsonnet';\n"
        f"{{run: [etcha.file(path='{target}', contents='managed\\n')]}}\n"
    )
    client = write_json(tmp_path / "client.json", {"build": {"signingKey": RIGHT_PRIV}})
    with daemon(tmp_path, config, port, "stdlib", clean_exit=True) as (_, log):
        fingerprint, _ = logged(log)
        outcomes = []
        for _ in range(20):
            pushed = run_agent(
                "-c", str(client), "push", "-h", "https://127.0.0.1", "-p", str(port),
                "--fingerprint", fingerprint, "core", str(pattern), cwd=tmp_path,
            )  # fmt: skip
            outcomes.append((pushed.returncode, pushed.stderr.strip()))
            target.unlink(missing_ok=True)
        token = (tmp_path / "state" / "core.jwt").read_text()
    assert len(token) > 16 * 1024  # more than one TLS record
    assert outcomes == [(0, "")] * 20, outcomes
