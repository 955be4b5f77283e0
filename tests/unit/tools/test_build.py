"""`agent build`, signing (keys, key files, signingCommands with openssl) and verify commands."""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support import run_agent

from agent.config.schema import config_from_dict
from agent.core.errors import VerifyError
from agent.jws.keys import generate_keys, parse_verify_key
from agent.jws.tokens import verify_token
from agent.trust.gate import Context, TrustGate
from agent.trust.verify import verify_for_source

HAS_OPENSSL = shutil.which("openssl") is not None
needs_openssl = pytest.mark.skipif(
    not HAS_OPENSSL, reason="openssl is not installed (.ci/run installs it)"
)


agent = run_agent


@pytest.fixture
def keys() -> tuple[str, str]:
    return generate_keys("ed25519", "build")


def project(tmp_path: Path, config: dict[str, Any], pattern: str) -> Path:
    (tmp_path / "agent.jsonnet").write_text(json.dumps(config))
    (tmp_path / "p.jsonnet").write_text(pattern)
    return tmp_path


SIMPLE = "{run: [{id: 'a', always: true, change: 'true'}]}"


class TestBuildCommand:
    def test_build_writes_a_token_that_verifies(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        project(tmp_path, {"build": {"signingKey": keys[0]}}, SIMPLE)
        res = agent("build", "p.jsonnet", "out.jwt", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        token = verify_token((tmp_path / "out.jwt").read_text(), [parse_verify_key(keys[1])])
        assert token.pattern_entrypoint == "/p.jsonnet"
        assert token.pattern_files == {"/p.jsonnet": SIMPLE}
        assert token.header == {"alg": "EdDSA", "kid": "build", "typ": "JWT"}

    def test_default_destination_is_build_output_else_etcha_jwt(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        project(tmp_path, {"build": {"signingKey": keys[0]}}, SIMPLE)
        assert agent("build", "p.jsonnet", cwd=tmp_path).returncode == 0
        assert (tmp_path / "etcha.jwt").exists()
        (tmp_path / "q.jsonnet").write_text(
            "{run: [{id: std.native('getConfig')().vars.dstPath, always: true}],"
            " buildOutput: 'named.jwt'}"
        )
        res = agent("build", "q.jsonnet", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        token = verify_token((tmp_path / "named.jwt").read_text(), [parse_verify_key(keys[1])])
        assert "dstPath" not in token.run_vars
        assert token.pattern_files is not None
        assert "named.jwt" in token.pattern_files["/q.jsonnet"]

    def test_build_commands_fill_manifest_and_run_vars(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        project(
            tmp_path,
            {"build": {"signingKey": keys[0]}},
            "{build: [{id: 'b', always: true, change: 'echo world',"
            " onChange: ['etcha:buildManifest', 'etcha:runVar_hello']}],"
            " run: [{id: 'r', always: true}], runVars: {extra: 'value'},"
            " audience: ['one'], issuer: 'iss!', subject: 'sub!', id: 'jti!', expiresIn: '1m'}",
        )
        assert agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path).returncode == 0
        token = verify_token((tmp_path / "t.jwt").read_text(), [parse_verify_key(keys[1])])
        assert token.build_manifest == "world\n"
        assert dict(token.run_vars) == {"extra": "value", "hello": "world"}
        assert token.claims["aud"] == "one"  # one entry gives a string
        assert (token.iss, token.sub, token.jti) == ("iss!", "sub!", "jti!")
        assert token.exp is not None and token.iat is not None and token.exp - token.iat == 60

    def test_several_audiences_give_a_list(self, tmp_path: Path, keys: tuple[str, str]) -> None:
        project(
            tmp_path, {"build": {"signingKey": keys[0]}}, SIMPLE[:-1] + ", audience: ['a', 'b']}"
        )
        assert agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path).returncode == 0
        token = verify_token((tmp_path / "t.jwt").read_text(), [parse_verify_key(keys[1])])
        assert token.claims["aud"] == ["a", "b"]

    def test_failed_build_command_leaves_no_file(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        project(
            tmp_path,
            {"build": {"signingKey": keys[0]}},
            "{build: [{id: 'b', always: true, change: 'exit 3'}], run: [{id: 'r', always: true}]}",
        )
        res = agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path)
        assert res.returncode == 1
        errors = [line for line in res.stderr.splitlines() if line.startswith("ERROR: ")]
        assert len(errors) == 1 and "build commands failed" in errors[0]
        assert "Traceback" not in res.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["agent.jsonnet", "p.jsonnet"]

    def test_missing_signing_key_is_one_clear_line(self, tmp_path: Path) -> None:
        project(tmp_path, {}, SIMPLE)
        res = agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path)
        assert res.returncode == 1
        assert res.stderr.startswith("ERROR: missing build.signingKey")
        assert not (tmp_path / "t.jwt").exists()

    def test_signing_key_path_is_searched_upward(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        (tmp_path / "signing.key").write_text(keys[0] + "\n")
        sub = tmp_path / "a" / "b"
        sub.mkdir(parents=True)
        project(sub, {"build": {"signingKeyPath": "signing.key"}}, SIMPLE)
        assert agent("build", "p.jsonnet", "t.jwt", cwd=sub).returncode == 0
        verify_token((sub / "t.jwt").read_text(), [parse_verify_key(keys[1])])

    def test_missing_signing_key_path_is_an_error(self, tmp_path: Path) -> None:
        project(tmp_path, {"build": {"signingKeyPath": "nope.key"}}, SIMPLE)
        res = agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path)
        assert res.returncode == 1 and "no file 'nope.key' found" in res.stderr

    def test_signing_key_never_appears_in_errors(
        self, tmp_path: Path, keys: tuple[str, str]
    ) -> None:
        broken = keys[0][:-8] + "AAAAAAAA"
        project(tmp_path, {"build": {"signingKey": broken}}, SIMPLE)
        res = agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path)
        assert res.returncode == 1
        material = keys[0].split(":")[1]
        assert material[:20] not in res.stderr and material[:20] not in res.stdout


def _openssl_keypair(tmp_path: Path) -> tuple[Path, str, str]:
    """An Ed25519 key made by openssl: (PEM path, agent private string, agent public string)."""
    pem = tmp_path / "ed.pem"
    subprocess.run(["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(pem)], check=True)
    der = subprocess.run(
        ["openssl", "pkey", "-in", str(pem), "-outform", "DER"], check=True, capture_output=True
    ).stdout
    pub = subprocess.run(
        ["openssl", "pkey", "-in", str(pem), "-pubout", "-outform", "DER"],
        check=True,
        capture_output=True,
    ).stdout
    return (
        pem,
        "ed25519private:" + base64.b64encode(der).decode() + ":ossl",
        "ed25519public:" + base64.b64encode(pub).decode() + ":ossl",
    )


# header {"alg":"EdDSA","kid":"ossl","typ":"JWT"} + "." + payload, signed by openssl.
SIGN_SCRIPT = r"""set -e
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
header=$(printf '%s' '{"alg":"EdDSA","kid":"ossl","typ":"JWT"}' | b64url)
input="$header.$ETCHA_PAYLOAD"
printf '%s' "$input" > "$WORK/input"
openssl pkeyutl -sign -rawin -inkey "$KEY" -in "$WORK/input" -out "$WORK/sig"
printf '%s.%s' "$input" "$(b64url < "$WORK/sig")"
"""

VERIFY_SCRIPT = r"""set -e
unb64url() {
  s=$(printf '%s' "$1" | tr -- '-_' '+/')
  while [ $(( ${#s} % 4 )) -ne 0 ]; do s="$s="; done
  printf '%s' "$s" | openssl base64 -d -A
}
sig=${ETCHA_JWT##*.}
input=${ETCHA_JWT%.*}
printf '%s' "$input" > "$WORK/vinput"
unb64url "$sig" > "$WORK/vsig"
openssl pkeyutl -verify -rawin -pubin -inkey "$PUB" -in "$WORK/vinput" \
  -sigfile "$WORK/vsig" >/dev/null
printf '%s' "$ETCHA_JWT"
"""


@needs_openssl
class TestOpensslInterop:
    def test_openssl_generated_key_works_as_signing_key(self, tmp_path: Path) -> None:
        _, private, public = _openssl_keypair(tmp_path)
        project(tmp_path, {"build": {"signingKey": private}}, SIMPLE)
        assert agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path).returncode == 0
        verify_token((tmp_path / "t.jwt").read_text(), [parse_verify_key(public)])

    def test_signing_commands_build_the_token_with_openssl(self, tmp_path: Path) -> None:
        pem, _, public = _openssl_keypair(tmp_path)
        config = {
            "build": {
                "signingCommands": [
                    {
                        "id": "sign",
                        "always": True,
                        "change": SIGN_SCRIPT,
                        "onChange": ["etcha:jwt"],
                    }
                ],
                "signingExec": {"env": {"KEY": str(pem), "WORK": str(tmp_path)}},
            }
        }
        project(tmp_path, config, SIMPLE)
        res = agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        raw = (tmp_path / "t.jwt").read_text()
        assert not raw.endswith("\n")  # the jwt event output is trimmed
        token = verify_token(raw, [parse_verify_key(public)])
        assert token.pattern_files == {"/p.jsonnet": SIMPLE}

    def test_verify_commands_verify_with_openssl(self, tmp_path: Path) -> None:
        pem, private, _ = _openssl_keypair(tmp_path)
        pub_pem = tmp_path / "pub.pem"
        subprocess.run(
            ["openssl", "pkey", "-in", str(pem), "-pubout", "-out", str(pub_pem)], check=True
        )
        project(tmp_path, {"build": {"signingKey": private}}, SIMPLE)
        assert agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path).returncode == 0
        raw = (tmp_path / "t.jwt").read_text()
        verify_cmds = [
            {"id": "v", "always": True, "change": VERIFY_SCRIPT, "onChange": ["etcha:jwt"]}
        ]
        config = config_from_dict(
            {
                "run": {
                    "verifyCommands": verify_cmds,
                    "verifyExec": {"env": {"PUB": str(pub_pem), "WORK": str(tmp_path)}},
                }
            },
            cwd=tmp_path,
        )
        token = asyncio.run(verify_for_source(raw, config=config, source=""))
        assert token.raw == raw and token.key_id == ""
        # a tampered token fails the openssl verification, so verification fails
        head, payload, sig = raw.split(".")
        bad = f"{head}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{sig}"
        with pytest.raises(VerifyError, match="verifyCommands failed"):
            asyncio.run(verify_for_source(bad, config=config, source=""))


class TestVerifyEntryPoint:
    def test_source_keys_are_appended_to_run_keys(self, keys: tuple[str, str]) -> None:
        _other_priv, other_pub = generate_keys("ed25519", "other")
        from agent.trust.verify import verify_keys_for

        config = config_from_dict(
            {"run": {"verifyKeys": [other_pub]}, "sources": {"web": {"verifyKeys": [keys[1]]}}},
            cwd=Path("/tmp"),
        )
        assert [k.kid for k in verify_keys_for(config, "web")] == ["other", "build"]
        assert [k.kid for k in verify_keys_for(config, "")] == ["other"]

    def test_no_keys_is_reason_no_keys(self) -> None:
        config = config_from_dict({}, cwd=Path("/tmp"))
        with pytest.raises(VerifyError) as err:
            asyncio.run(verify_for_source("a.b.c", config=config, source=""))
        assert err.value.reason in ("no_keys", "malformed")

    def test_verify_commands_without_jwt_event_refuse(self, keys: tuple[str, str]) -> None:
        config = config_from_dict(
            {"run": {"verifyCommands": [{"id": "v", "always": True, "change": "true"}]}},
            cwd=Path("/tmp"),
        )
        with pytest.raises(VerifyError, match="no command fired etcha:jwt"):
            asyncio.run(verify_for_source("a.b.c", config=config, source=""))

    def test_source_verify_commands_replace_keys(
        self, keys: tuple[str, str], tmp_path: Path
    ) -> None:
        from agent.pattern.load import load_from_text
        from agent.tools.build import build_token

        build_cfg = config_from_dict({"build": {"signingKey": keys[0]}}, cwd=tmp_path)
        loaded = load_from_text(SIMPLE, config=build_cfg, source="")
        raw = asyncio.run(build_token(loaded, config=build_cfg))
        # the key is right, but the source's verify commands refuse: commands win
        config = config_from_dict(
            {
                "run": {"verifyKeys": [keys[1]]},
                "sources": {
                    "s": {"verifyCommands": [{"id": "no", "always": True, "change": "exit 1"}]}
                },
            },
            cwd=tmp_path,
        )
        with pytest.raises(VerifyError):
            asyncio.run(verify_for_source(raw, config=config, source="s"))
        assert asyncio.run(verify_for_source(raw, config=config, source="")).key_id == "build"


class TestJoseInterop:
    # RFC 9864 deprecates the name "EdDSA" in favour of "Ed25519"; Etcha emits "EdDSA".
    @pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
    @pytest.mark.parametrize("alg", ["ed25519", "ecp256", "rsa2048"])
    def test_built_tokens_verify_with_joserfc(self, tmp_path: Path, alg: str) -> None:
        from cryptography.hazmat.primitives.serialization import load_der_public_key
        from joserfc import jws
        from joserfc.jwk import ECKey, OKPKey, RSAKey

        private, public = generate_keys(alg, "jose")
        project(tmp_path, {"build": {"signingKey": private}}, SIMPLE)
        assert agent("build", "p.jsonnet", "t.jwt", cwd=tmp_path).returncode == 0
        raw = (tmp_path / "t.jwt").read_text()
        der = base64.b64decode(public.split(":")[1])
        key_cls = {"ed25519": OKPKey, "ecp256": ECKey, "rsa2048": RSAKey}[alg]
        jwk = key_cls.import_key(load_der_public_key(der))  # type: ignore[attr-defined]
        algs = {"ed25519": ["EdDSA"], "ecp256": ["ES256"], "rsa2048": ["RS256"]}[alg]
        obj = jws.deserialize_compact(raw, jwk, algorithms=algs)
        assert json.loads(obj.payload)["etchaPattern"]["entrypoint"] == "/p.jsonnet"


def test_build_token_rejects_an_unwritable_destination(
    tmp_path: Path, keys: tuple[str, str]
) -> None:
    project(tmp_path, {"build": {"signingKey": keys[0]}}, SIMPLE)
    res = agent("build", "p.jsonnet", str(tmp_path / "missing-dir" / "t.jwt"), cwd=tmp_path)
    assert res.returncode == 1 and "error writing jwt" in res.stderr
    assert not (tmp_path / "missing-dir").exists()


STDLIB_PATTERN = """local etcha = import 'etcha/etcha.libsonnet';
{run: [etcha.file(path='/srv/motd', contents='hello\\n')]}
"""


def test_build_embeds_the_packaged_standard_library(tmp_path: Path, keys: tuple[str, str]) -> None:
    from importlib import resources

    project(tmp_path, {"build": {"signingKey": keys[0]}}, STDLIB_PATTERN)
    res = agent("build", "p.jsonnet", "out.jwt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    token = verify_token((tmp_path / "out.jwt").read_text(), [parse_verify_key(keys[1])])
    lib = resources.files("agent").joinpath("lib", "etcha")
    assert token.pattern_entrypoint == "/p.jsonnet"
    assert token.pattern_files is not None
    assert token.pattern_files["/p.jsonnet"] == STDLIB_PATTERN
    for name in ("etcha.libsonnet", "file.libsonnet", "helpers.libsonnet", "native.libsonnet"):
        assert token.pattern_files[f"/etcha/{name}"] == lib.joinpath(name).read_text()
    assert not (tmp_path / "lib").exists()


def test_a_host_renders_a_stdlib_token_from_the_token_alone(
    tmp_path: Path, keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from importlib import resources

    from agent.pattern.load import load_from_token

    laptop, host = tmp_path / "laptop", tmp_path / "host"
    laptop.mkdir()
    host.mkdir()
    project(laptop, {"build": {"signingKey": keys[0]}}, STDLIB_PATTERN)
    assert agent("build", "p.jsonnet", str(host / "t.jwt"), cwd=laptop).returncode == 0
    (host / "agent.jsonnet").write_text(json.dumps({"run": {"verifyKeys": [keys[1]]}}))
    res = agent("render", "t.jwt", cwd=host)
    assert res.returncode == 0, res.stderr
    assert [c["id"] for c in json.loads(res.stdout)["run"]] == ["file /srv/motd"]
    # In-process, with the package's library unreachable: the token's copy is all it uses.
    token = verify_token((host / "t.jwt").read_text(), [parse_verify_key(keys[1])])

    def no_package_data(*args: object) -> object:
        raise AssertionError("a host read the package's standard library")

    monkeypatch.setattr(resources, "files", no_package_data)
    config = config_from_dict({}, cwd=host)
    gate = TrustGate(config_from_dict({"run": {"verifyKeys": [keys[1]]}}, cwd=host))
    admitted = asyncio.run(gate.admit(token.raw, "", Context.OFFLINE))
    loaded = load_from_token(admitted, config=config, source="web")
    assert [c.id for c in loaded.pattern.run] == ["file /srv/motd"]
