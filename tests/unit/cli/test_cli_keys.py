"""`agent generate-keys`, `agent jwt` and `agent compare`, driven as real subprocesses."""

from __future__ import annotations

import http.server
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support import run_agent

from agent.jws.keys import generate_keys, parse_signing_key, parse_verify_key
from agent.jws.tokens import etcha_claims, sign_token


@pytest.fixture
def work(tmp_path: Path) -> Path:
    """An empty working directory with no config file anywhere above it that we control."""
    d = tmp_path / "work"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def pair() -> tuple[str, str]:
    return generate_keys("ed25519", "cli")


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pattern_entrypoint": "/main.jsonnet",
        "pattern_files": {"/main.jsonnet": "{run: [{id: 'a', change: 'echo a > b'}]}\n"},
        "build_manifest": "manifest\n",
        "run_vars": {"hello": "world"},
        "version": "0.1.0",
        "now": time.time(),
        "expires_in": 3600,
    }
    base.update(overrides)
    return etcha_claims(**base)


def write_token(path: Path, private: str, **overrides: Any) -> Path:
    path.write_text(sign_token(claims(**overrides), parse_signing_key(private)) + "\n")
    return path


# --- generate-keys -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "family"),
    [
        ((), "ed25519"),
        (("-a", "best"), "ed25519"),
        (("-a", "ecp256"), "ecp256"),
        (("-a", "rsa2048"), "rsa2048"),
    ],
)
def test_generate_keys_prints_indented_pair_sharing_the_name(
    flags: tuple[str, ...], family: str, work: Path
) -> None:
    out = run_agent("generate-keys", *flags, "my-key", cwd=work)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert list(data) == ["privateKey", "publicKey"]
    assert out.stdout == json.dumps(data, indent=2) + "\n"
    assert data["privateKey"].startswith(f"{family}private:") and data["privateKey"].endswith(
        ":my-key"
    )
    assert data["publicKey"].startswith(f"{family}public:") and data["publicKey"].endswith(
        ":my-key"
    )
    key = parse_signing_key(data["privateKey"])
    assert parse_verify_key(data["publicKey"]).verify(key.sign(b"x"), b"x")


def test_gen_keys_alias_and_random_id(work: Path) -> None:
    out = run_agent("gen-keys", cwd=work)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    kid = data["privateKey"].rsplit(":", 1)[1]
    assert len(kid) == 10 and kid.isalnum() and data["publicKey"].endswith(":" + kid)


def test_generate_keys_rejects_unknown_algorithm_with_usage_error(work: Path) -> None:
    out = run_agent("generate-keys", "-a", "dsa", cwd=work)
    assert out.returncode == 2
    assert out.stdout == ""


# --- jwt ---------------------------------------------------------------------------------------


def test_jwt_prints_all_claims_and_exits_0_when_verified(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    token = write_token(work / "p.jwt", private, audience=["a1"], issuer="me")
    out = run_agent("-x", f"run_verifyKeys={public}", "jwt", str(token), cwd=work)
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["etchaBuildManifest"] == "manifest\n"
    assert printed["etchaRunVars"] == {"hello": "world"}
    assert printed["aud"] == "a1" and printed["iss"] == "me"
    assert {"iat", "nbf", "exp"} <= set(printed)
    # Go MarshalIndent layout: sorted keys, 2-space indent, Go escaping of '>'
    assert out.stdout.startswith('{\n  "aud": "a1",\n  "etchaBuildManifest": "manifest\\n",\n')
    assert "echo a \\u003e b" in out.stdout


def test_jwt_v1_with_interop_key_prints_claims_and_reports_expiry(
    interop: dict[str, Any], work: Path
) -> None:
    token = work / "v1.jwt"
    token.write_text(interop["byteExact"]["V1"]["token"])
    public = interop["keyPairs"][0]["publicKey"]
    out = run_agent("-x", f"run_verifyKeys={public}", "jwt", str(token), cwd=work)
    assert out.returncode == 1
    assert json.loads(out.stdout) == interop["byteExact"]["V1"]["claims"]
    assert out.stderr.count("\n") == 1  # one line
    assert out.stderr.startswith("ERROR: token expired at 2023-11-14T22:14:19Z (now ")


def test_jwt_without_verify_keys_prints_claims_and_fails(
    interop: dict[str, Any], work: Path
) -> None:
    token = work / "t2.jwt"
    token.write_text(interop["tokens"]["T2"])
    out = run_agent("jwt", str(token), cwd=work)
    assert out.returncode == 1
    printed = json.loads(out.stdout)
    assert printed["etchaRunVars"] == {"hello": "world", "world": "hello"}  # from etchaRunEnv
    assert printed["etchaVersion"] == "v2023.10.02" and printed["aud"] == "audience!"
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("ERROR: cannot verify JWT without verify keys")


def test_jwt_t1_with_wrong_keys_prints_decoded_claims_and_says_no_key_matched(
    interop: dict[str, Any], work: Path
) -> None:
    token = work / "t1.jwt"
    token.write_text(interop["tokens"]["T1"])
    keys = json.dumps([p["publicKey"] for p in interop["keyPairs"]])
    out = run_agent("-x", f"run_verifyKeys={keys}", "jwt", str(token), cwd=work)
    assert out.returncode == 1
    printed = json.loads(out.stdout)
    assert printed["Licensed"] is True and printed["jti"] == "id"
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("ERROR: no verify key matched")


def test_jwt_not_yet_valid_names_the_time(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    token = write_token(work / "future.jwt", private, now=4_000_000_000.0)
    out = run_agent("-x", f"run_verifyKeys={public}", "jwt", str(token), cwd=work)
    assert out.returncode == 1
    assert json.loads(out.stdout)["nbf"] == 4_000_000_000
    assert out.stderr.startswith("ERROR: token not valid before 2096-10-02T07:06:40Z")


def test_jwt_malformed_token_is_one_error_line(work: Path) -> None:
    token = work / "bad.jwt"
    token.write_text("this.is.not-a-token")
    out = run_agent("jwt", str(token), cwd=work)
    assert out.returncode == 1
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("ERROR: malformed token")
    assert "this.is.not-a-token" not in out.stderr


def test_jwt_missing_file_is_error_opening_src(work: Path) -> None:
    out = run_agent("jwt", str(work / "nope.jwt"), cwd=work)
    assert out.returncode == 1
    assert out.stderr.startswith("ERROR: error opening src")


class _TokenHandler(http.server.BaseHTTPRequestHandler):
    body = b""

    def do_GET(self) -> None:
        if self.path.split("?", 1)[0] != "/t.jwt":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def token_server(pair: tuple[str, str]) -> Iterator[str]:
    body = sign_token(claims(build_manifest="from http\n"), parse_signing_key(pair[0])).encode()
    handler = type("Handler", (_TokenHandler,), {"body": body})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_jwt_reads_tokens_from_http_urls(
    pair: tuple[str, str], token_server: str, work: Path
) -> None:
    out = run_agent("-x", f"run_verifyKeys={pair[1]}", "jwt", f"{token_server}/t.jwt", cwd=work)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["etchaBuildManifest"] == "from http\n"
    missing = run_agent("-x", f"run_verifyKeys={pair[1]}", "jwt", f"{token_server}/x", cwd=work)
    assert missing.returncode == 1 and missing.stderr.startswith("ERROR: error opening src")


def test_jwt_does_not_import_aiohttp_or_apscheduler(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    token = write_token(work / "p.jwt", private)
    out = run_agent(
        "-x",
        f"run_verifyKeys={public}",
        "jwt",
        str(token),
        cwd=work,
        env={"PYTHONPROFILEIMPORTTIME": "1"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {
        line.split("|")[-1].strip()
        for line in out.stderr.splitlines()
        if line.startswith("import time:")
    }
    assert "agent.jws.tokens" in imported  # the import log really is there
    heavy = {
        m for m in imported if m.split(".")[0] in ("aiohttp", "apscheduler", "prometheus_client")
    }
    assert heavy == set()


# --- compare -----------------------------------------------------------------------------------


def compare(public: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_agent("-x", f"run_verifyKeys={public}", "compare", *args, cwd=cwd)


def test_compare_equal_tokens_exit_0_silently(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    new = write_token(work / "new.jwt", private, run_vars={"differs": 1}, now=time.time())
    old = write_token(work / "old.jwt", private, now=time.time() - 100)
    out = compare(public, str(new), str(old), cwd=work)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")


def test_compare_build_manifest_mismatch_prints_labelled_diff(
    pair: tuple[str, str], work: Path
) -> None:
    private, public = pair
    new = write_token(work / "new.jwt", private, build_manifest="two\n", version="9")
    old = write_token(work / "old.jwt", private, build_manifest="one\n")
    out = compare(public, str(new), str(old), cwd=work)
    assert out.returncode == 1
    assert "--- old etchaManifest" in out.stdout and "+++ new etchaManifest" in out.stdout
    assert "-one" in out.stdout and "+two" in out.stdout
    assert out.stderr == "ERROR: JWTs do not match: etchaBuildManifest differs\n"


def test_compare_version_mismatch_unless_ignored(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    new = write_token(work / "new.jwt", private, version="0.2.0")
    old = write_token(work / "old.jwt", private, version="0.1.0")
    out = compare(public, str(new), str(old), cwd=work)
    assert out.returncode == 1
    assert "--- old etchaVersion" in out.stdout and "+0.2.0" in out.stdout
    assert out.stderr == "ERROR: JWTs do not match: etchaVersion differs\n"
    ignored = compare(public, "-i", str(new), str(old), cwd=work)
    assert (ignored.returncode, ignored.stdout) == (0, "")


def test_compare_pattern_mismatch_diffs_pretty_json(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    new = write_token(work / "new.jwt", private, pattern_files={"/main.jsonnet": "{run: []}"})
    old = write_token(work / "old.jwt", private)
    out = compare(public, "-i", str(new), str(old), cwd=work)
    assert out.returncode == 1
    assert "--- old etchaPattern" in out.stdout and "+++ new etchaPattern" in out.stdout
    assert '+    "/main.jsonnet": "{run: []}"' in out.stdout
    assert out.stderr == "ERROR: JWTs do not match: etchaPattern differs\n"


def test_compare_unverifiable_or_unreadable_token_fails(pair: tuple[str, str], work: Path) -> None:
    private, public = pair
    other_private, _ = generate_keys("ed25519", "other")
    new = write_token(work / "new.jwt", other_private)
    old = write_token(work / "old.jwt", private)
    out = compare(public, str(new), str(old), cwd=work)
    assert out.returncode == 1
    assert out.stderr.startswith(f"ERROR: new JWT {new}: no verify key matched")
    missing = compare(public, str(work / "missing.jwt"), str(old), cwd=work)
    assert missing.returncode == 1 and missing.stderr.startswith("ERROR: error opening src")


# --- URL secrets never reach an error (issue 12) -------------------------------------------------


def _assert_no_url_secrets(text: str) -> None:
    for secret in ("alice", "pw-secret", "sig=", "q-secret"):
        assert secret not in text, text


def test_jwt_url_error_names_the_url_without_user_info_or_query(
    pair: tuple[str, str], token_server: str, work: Path
) -> None:
    port = token_server.rsplit(":", 1)[1]
    for url in (
        f"{token_server}/missing?sig=q-secret",
        f"http://alice:pw-secret@127.0.0.1:{port}/missing?sig=q-secret",
        "http://alice:pw-secret@127.0.0.1:notaport/t.jwt?sig=q-secret",
    ):
        out = run_agent("-x", f"run_verifyKeys={pair[1]}", "jwt", url, cwd=work)
        assert out.returncode == 1
        assert out.stderr.startswith("ERROR: error opening src http://127.0.0.1"), out.stderr
        _assert_no_url_secrets(out.stderr + out.stdout)


def test_compare_url_verify_error_names_the_url_without_query(
    token_server: str, work: Path
) -> None:
    _, other_public = generate_keys("ed25519", "other")
    url = f"{token_server}/t.jwt?sig=q-secret"
    out = compare(other_public, url, url, cwd=work)
    assert out.returncode == 1
    assert out.stderr.startswith(f"ERROR: new JWT {token_server}/t.jwt: no verify key matched")
    _assert_no_url_secrets(out.stderr)
