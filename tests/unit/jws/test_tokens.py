"""agent.jws.tokens: Etcha-compatible signing, decoding and hardened verification."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.errors import TokenError, VerifyError
from agent.jws.keys import SigningKey, VerifyKey, generate_keys, parse_signing_key, parse_verify_key
from agent.jws.tokens import (
    DEFAULT_MAX_TOKEN_BYTES,
    LEEWAY_SECONDS,
    DecodedToken,
    VerifiedToken,
    accept_command_token,
    decode_token,
    encode_payload,
    etcha_claims,
    sign_token,
    token_identity,
    verify_token,
)

NOW = 1_700_000_000


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def sign_raw(header: bytes, payload: bytes, key: SigningKey) -> str:
    """A token over arbitrary header/payload bytes (to test what the verifier does with them)."""
    signing_input = b64u(header) + "." + b64u(payload)
    return signing_input + "." + b64u(key.sign(signing_input.encode()))


@pytest.fixture(scope="module")
def ed() -> tuple[SigningKey, VerifyKey]:
    private, public = generate_keys("ed25519", "ed")
    return parse_signing_key(private), parse_verify_key(public)


@pytest.fixture(scope="module")
def ecp() -> tuple[SigningKey, VerifyKey]:
    private, public = generate_keys("ecp256", "ec")
    return parse_signing_key(private), parse_verify_key(public)


@pytest.fixture(scope="module")
def rsa_pair() -> tuple[SigningKey, VerifyKey]:
    private, public = generate_keys("rsa2048", "rsa")
    return parse_signing_key(private), parse_verify_key(public)


def ed_header(kid: str = "ed") -> bytes:
    return b'{"alg":"EdDSA","kid":"' + kid.encode() + b'","typ":"JWT"}'


def reason_of(token: str, keys: list[VerifyKey], now: float = NOW) -> str:
    with pytest.raises(VerifyError) as info:
        verify_token(token, keys, now=now)
    assert "\n" not in str(info.value)
    return info.value.reason


# --- signing and Etcha's byte layout -----------------------------------------------------------


def test_v1_is_reproduced_byte_for_byte(interop: dict[str, Any]) -> None:
    vector = interop["byteExact"]["V1"]
    pair = next(p for p in interop["keyPairs"] if p["id"] == vector["privateKeyId"])
    assert sign_token(vector["claims"], parse_signing_key(pair["privateKey"])) == vector["token"]


def test_etcha_claims_build_v1_from_pattern_properties(interop: dict[str, Any]) -> None:
    vector = interop["byteExact"]["V1"]
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files={"/main.jsonnet": "{run: [{id: 'a', change: 'echo a > b'}]}"},
        build_manifest="build\n",
        run_vars={"hello": "world"},
        version="v2024.04",
        audience=["audience!"],
        expires_in=59,
        issuer="issuer!",
        subject="subject!",
        now=1700000000.75,
    )
    assert claims == vector["claims"]
    key = parse_signing_key(interop["keyPairs"][0]["privateKey"])
    assert sign_token(claims, key) == vector["token"]


def test_v1_verifies_and_key_id_is_the_configured_keys_id(interop: dict[str, Any]) -> None:
    vector = interop["byteExact"]["V1"]
    public = interop["keyPairs"][0]["publicKey"].rsplit(":", 1)[0] + ":configured-id"
    token = verify_token(vector["token"], [parse_verify_key(public)], now=1700000000)
    assert token.key_id == "configured-id"
    assert token.header["kid"] == "reqYEklgP4"
    assert token.pattern_entrypoint == "/main.jsonnet"
    assert dict(token.pattern_files or {}) == vector["claims"]["etchaPattern"]["files"]
    assert dict(token.run_vars) == {"hello": "world"}
    assert (token.build_manifest, token.version) == ("build\n", "v2024.04")
    assert (token.iat, token.nbf, token.exp) == (1700000000, 1700000000, 1700000059)
    assert (token.aud, token.iss, token.sub, token.jti) == (
        ("audience!",),
        "issuer!",
        "subject!",
        "",
    )
    assert token.raw == vector["token"]
    assert vector["token"] not in repr(token)


def test_header_is_alg_kid_typ_and_kid_is_omitted_without_id(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    signer, _ = ed
    header = base64.urlsafe_b64decode(sign_token({}, signer).split(".")[0] + "==")
    assert header == b'{"alg":"EdDSA","kid":"ed","typ":"JWT"}'
    private, _public = generate_keys("ed25519")
    no_id = parse_signing_key(private.rsplit(":", 1)[0])
    header = base64.urlsafe_b64decode(sign_token({}, no_id).split(".")[0] + "==")
    assert header == b'{"alg":"EdDSA","typ":"JWT"}'
    odd = parse_signing_key(private.rsplit(":", 1)[0] + ":a<b>&c")
    header = base64.urlsafe_b64decode(sign_token({}, odd).split(".")[0] + "==")
    assert header == b'{"alg":"EdDSA","kid":"a\\u003cb\\u003e\\u0026c","typ":"JWT"}'


def test_tokens_are_base64url_without_padding(ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"x": "??>>~~" * 7, "n": 1.5}, ed[0])
    assert "=" not in token and "+" not in token and "/" not in token
    assert token.split(".")[1] == encode_payload({"x": "??>>~~" * 7, "n": 1.5})
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert payload == b'{"n":1.5,"x":"' + b"??\\u003e\\u003e~~" * 7 + b'"}'


def test_etcha_claims_omission_rules() -> None:
    base: dict[str, Any] = {
        "pattern_entrypoint": "",
        "pattern_files": None,
        "build_manifest": "",
        "run_vars": {},
        "version": "",
        "now": 1000.9,
    }
    assert etcha_claims(**base) == {
        "etchaBuildManifest": "",
        "etchaPattern": None,
        "etchaRunVars": {},
        "iat": 1000,
        "nbf": 1000,
    }
    two = etcha_claims(**{**base, "audience": ("a", "b"), "jti": "id", "expires_in": 3600})
    assert two["aud"] == ["a", "b"] and two["jti"] == "id" and two["exp"] == 4600
    assert "iss" not in two and "sub" not in two and "etchaVersion" not in two
    files_none = etcha_claims(**{**base, "pattern_entrypoint": "/main.jsonnet"})
    assert files_none["etchaPattern"] == {"entrypoint": "/main.jsonnet", "files": None}


def test_payload_numbers_are_go_formatted(ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"etchaRunVars": {"i": 1, "f": 1.0, "big": 1e21, "small": 1e-7}}, ed[0])
    payload = base64.urlsafe_b64decode(token.split(".")[1] + "==")
    assert payload == b'{"etchaRunVars":{"big":1e+21,"f":1,"i":1,"small":1e-7}}'


def test_unserialisable_claims_are_token_errors(ed: tuple[SigningKey, VerifyKey]) -> None:
    with pytest.raises(TokenError, match="finite"):
        sign_token({"n": float("nan")}, ed[0])
    with pytest.raises(TokenError, match="map key"):
        encode_payload({"x": {1: 2}})


# --- round trips for each algorithm ------------------------------------------------------------


@pytest.mark.parametrize("pair", ["ed", "ecp", "rsa_pair"])
def test_round_trip_for_every_algorithm(pair: str, request: pytest.FixtureRequest) -> None:
    signer, verifier = request.getfixturevalue(pair)
    token = sign_token({"etchaBuildManifest": "m", "nbf": NOW}, signer)
    verified = verify_token(token, [verifier], now=NOW)
    assert verified.header["alg"] == signer.jws_alg
    assert verified.build_manifest == "m"


def test_rs256_and_es256_labelled_rsa_tokens_both_verify_with_rsa_key(
    rsa_pair: tuple[SigningKey, VerifyKey],
) -> None:
    signer, verifier = rsa_pair
    rs256 = sign_token({"a": 1}, signer)
    assert json.loads(base64.urlsafe_b64decode(rs256.split(".")[0] + "=="))["alg"] == "RS256"
    etcha_style = sign_raw(b'{"alg":"ES256","kid":"rsa","typ":"JWT"}', b'{"a":1}', signer)
    assert verify_token(rs256, [verifier], now=NOW).claims["a"] == 1
    assert verify_token(etcha_style, [verifier], now=NOW).claims["a"] == 1


def test_es256_token_is_not_checked_by_an_ed25519_key(
    ed: tuple[SigningKey, VerifyKey], ecp: tuple[SigningKey, VerifyKey]
) -> None:
    token = sign_token({"a": 1}, ecp[0])
    assert reason_of(token, [ed[1]]) == "no_match"
    assert verify_token(token, [ed[1], ecp[1]], now=NOW).key_id == "ec"


def test_wrong_type_keys_first_are_skipped(
    ed: tuple[SigningKey, VerifyKey],
    ecp: tuple[SigningKey, VerifyKey],
    rsa_pair: tuple[SigningKey, VerifyKey],
) -> None:
    token = sign_token({"a": 1}, ed[0])
    verified = verify_token(token, [ecp[1], rsa_pair[1], ed[1]], now=NOW)
    assert verified.key_id == "ed"
    assert reason_of(token, [ecp[1], rsa_pair[1]]) == "no_match"


def test_keys_are_tried_in_order_and_kid_does_not_choose(
    interop: dict[str, Any], ed: tuple[SigningKey, VerifyKey]
) -> None:
    token = sign_token({"a": 1}, ed[0])
    wrong = [parse_verify_key(p["publicKey"]) for p in interop["keyPairs"]]
    verified = verify_token(token, [*wrong, ed[1]], now=NOW)
    assert verified.key_id == "ed"
    renamed = parse_verify_key(str(ed[1]).rsplit(":", 1)[0] + ":other")
    assert verify_token(token, [renamed], now=NOW).key_id == "other"


# --- joserfc interop ---------------------------------------------------------------------------


def _joserfc_public(verifier: VerifyKey) -> Any:
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    der = base64.b64decode(str(verifier).split(":")[1])
    pem = serialization.load_der_public_key(der).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    kind: dict[str, type[OKPKey] | type[ECKey] | type[RSAKey]] = {
        "ed25519public": OKPKey,
        "ecp256public": ECKey,
        "rsa2048public": RSAKey,
    }
    return kind[verifier.algorithm].import_key(pem)


@pytest.fixture
def no_joserfc_security_warnings() -> Iterator[None]:
    from joserfc.errors import SecurityWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # "EdDSA is deprecated via RFC 9864"
        yield


@pytest.mark.usefixtures("no_joserfc_security_warnings")
@pytest.mark.parametrize("pair", ["ed", "ecp", "rsa_pair"])
def test_agent_tokens_verify_with_joserfc(pair: str, request: pytest.FixtureRequest) -> None:
    from joserfc import jwt

    signer, verifier = request.getfixturevalue(pair)
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files={"/main.jsonnet": "{run: []} // <&>"},
        build_manifest="x\n",
        run_vars={"n": 2},
        version="0.1.0",
        now=NOW,
    )
    token = sign_token(claims, signer)
    decoded = jwt.decode(token, _joserfc_public(verifier), algorithms=[signer.jws_alg])
    assert decoded.claims == claims
    assert decoded.header == {"alg": signer.jws_alg, "kid": signer.kid, "typ": "JWT"}


@pytest.mark.usefixtures("no_joserfc_security_warnings")
@pytest.mark.parametrize(("algorithm", "alg"), [("ed25519", "EdDSA"), ("ecp256", "ES256")])
def test_joserfc_tokens_verify_with_agent(algorithm: str, alg: str) -> None:
    from joserfc import jwt
    from joserfc.jwk import ECKey, OKPKey

    private, public = generate_keys(algorithm)
    der = base64.b64decode(private.split(":")[1])
    pem = serialization.load_der_private_key(der, None).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key = (OKPKey if algorithm == "ed25519" else ECKey).import_key(pem)
    token = jwt.encode({"alg": alg}, {"etchaBuildManifest": "j"}, key, algorithms=[alg])
    assert verify_token(token, [parse_verify_key(public)], now=NOW).build_manifest == "j"


# --- Etcha's documented tokens -----------------------------------------------------------------


def test_t1_fails_cleanly_with_no_match_but_decodes(interop: dict[str, Any]) -> None:
    token = interop["tokens"]["T1"]
    keys = [parse_verify_key(p["publicKey"]) for p in interop["keyPairs"]]
    keys += [parse_verify_key(k) for k in interop["publicKeys"]]
    assert reason_of(token, keys, now=1697070644) == "no_match"
    decoded = decode_token(token)
    assert isinstance(decoded, DecodedToken)
    assert decoded.header == {"alg": "EdDSA", "kid": "SNxihU1iCl", "typ": "JWT"}
    assert decoded.claims["Licensed"] is True
    assert decoded.claims["LastPurchase"] == "0001-01-01T00:00:00Z"
    assert decoded.claims["aud"] == "audience" and decoded.claims["exp"] == 1697070654


def test_t2_decodes_in_struct_order_and_etcha_run_env_is_read_as_run_vars(
    interop: dict[str, Any],
) -> None:
    token = interop["tokens"]["T2"]
    decoded = decode_token(token)
    assert list(decoded.claims) == [
        "etchaBuildManifest",
        "etchaPattern",
        "etchaRunEnv",
        "etchaVersion",
        "aud",
        "exp",
        "iat",
        "iss",
        "nbf",
        "sub",
    ]
    accepted = accept_command_token(token, now=1697071262)
    assert dict(accepted.run_vars) == {"hello": "world", "world": "hello"}
    assert accepted.pattern_entrypoint == "/main.jsonnet"
    assert accepted.version == "v2023.10.02" and accepted.key_id == ""
    keys = [parse_verify_key(p["publicKey"]) for p in interop["keyPairs"]]
    assert reason_of(token, keys, now=1697071262) == "no_match"
    assert reason_of(token, []) == "no_keys"


def test_signed_token_with_etcha_run_env_reads_it_as_run_vars(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    token = sign_token({"etchaRunEnv": {"a": "b"}}, ed[0])
    assert dict(verify_token(token, [ed[1]], now=NOW).run_vars) == {"a": "b"}
    both = sign_token({"etchaRunEnv": {"a": "b"}, "etchaRunVars": {"c": "d"}}, ed[0])
    assert dict(verify_token(both, [ed[1]], now=NOW).run_vars) == {"c": "d"}
    neither = sign_token({}, ed[0])
    assert dict(verify_token(neither, [ed[1]], now=NOW).run_vars) == {}


# --- tampering and alg confusion ---------------------------------------------------------------


def _flip(part: str) -> str:
    index = len(part) // 2
    return part[:index] + ("A" if part[index] != "A" else "B") + part[index + 1 :]


def test_tampered_payload_and_signature_do_not_verify(ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"etchaBuildManifest": "good", "etchaRunVars": {"x": "y"}}, ed[0])
    header, payload, signature = token.split(".")
    evil = b64u(json.dumps({"etchaBuildManifest": "evil", "etchaRunVars": {}}).encode())
    assert reason_of(f"{header}.{evil}.{signature}", [ed[1]]) == "no_match"
    assert reason_of(f"{header}.{_flip(payload)}.{signature}", [ed[1]]) == "no_match"
    assert reason_of(f"{header}.{payload}.{_flip(signature)}", [ed[1]]) == "no_match"
    assert reason_of(f"{header}.{payload}.", [ed[1]]) == "no_match"
    # 84 characters decode to 63 bytes with no unused bits: canonical, but the wrong signature
    assert reason_of(f"{header}.{payload}.{signature[:-2]}", [ed[1]]) == "no_match"


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_rejected(alg: str, ed: tuple[SigningKey, VerifyKey]) -> None:
    header = b64u(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    token = f"{header}.{b64u(b'{}')}."
    assert reason_of(token, [ed[1]]) == "malformed"
    assert decode_token(token).header["alg"] == alg  # still displayable


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512", "hs256"])
def test_hmac_signed_with_the_public_key_is_rejected(
    alg: str,
    ed: tuple[SigningKey, VerifyKey],
    rsa_pair: tuple[SigningKey, VerifyKey],
) -> None:
    digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}.get(alg.upper(), hashlib.sha256)
    for verifier in (ed[1], rsa_pair[1]):
        material = str(verifier).split(":")[1]
        secrets = [
            base64.b64decode(material),
            material.encode(),
            str(verifier).encode(),
            base64.b64decode(material)[-32:],
        ]
        for secret in secrets:
            signing_input = b64u(json.dumps({"alg": alg}).encode()) + "." + b64u(b'{"a":1}')
            mac = hmac.new(secret, signing_input.encode(), digest).digest()
            token = signing_input + "." + b64u(mac)
            with pytest.raises(VerifyError) as info:
                verify_token(token, [verifier], now=NOW)
            assert info.value.reason == "malformed"
            assert "HMAC" in str(info.value)


@pytest.mark.parametrize("alg", ["PS256", "ES512", "EdDSA2", "", "RS512"])
def test_unknown_algs_are_malformed(alg: str, ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_raw(json.dumps({"alg": alg}).encode(), b"{}", ed[0])
    assert reason_of(token, [ed[1]]) == "malformed"


# --- time claims -------------------------------------------------------------------------------


def test_exp_is_checked_with_30_second_leeway_at_the_edge(ed: tuple[SigningKey, VerifyKey]) -> None:
    exp = 1700000059
    token = sign_token({"exp": exp}, ed[0])
    assert verify_token(token, [ed[1]], now=exp + LEEWAY_SECONDS).exp == exp
    with pytest.raises(VerifyError) as info:
        verify_token(token, [ed[1]], now=exp + LEEWAY_SECONDS + 0.001)
    assert info.value.reason == "expired"
    assert "2023-11-14T22:14:19Z" in str(info.value)  # exp in UTC ISO form
    assert "2023-11-14T22:14:49Z" in str(info.value)  # and now


def test_nbf_is_checked_with_30_second_leeway_at_the_edge(ed: tuple[SigningKey, VerifyKey]) -> None:
    nbf = 1700000000
    token = sign_token({"nbf": nbf}, ed[0])
    assert verify_token(token, [ed[1]], now=nbf - LEEWAY_SECONDS).nbf == nbf
    with pytest.raises(VerifyError) as info:
        verify_token(token, [ed[1]], now=nbf - LEEWAY_SECONDS - 0.001)
    assert info.value.reason == "not_yet_valid"
    assert "2023-11-14T22:13:20Z" in str(info.value)


def test_zero_or_absent_exp_never_expires(ed: tuple[SigningKey, VerifyKey]) -> None:
    for claims in ({"exp": 0}, {}, {"exp": None}):
        token = sign_token(claims, ed[0])
        assert verify_token(token, [ed[1]], now=4_000_000_000).exp in (0, None)


def test_clock_is_used_when_now_is_not_given(ed: tuple[SigningKey, VerifyKey]) -> None:
    assert verify_token(sign_token({"exp": 4_000_000_000}, ed[0]), [ed[1]]).exp == 4_000_000_000
    expired = sign_token({"exp": NOW}, ed[0])
    with pytest.raises(VerifyError, match="expired at 2023-11-14T22:13:20Z"):
        verify_token(expired, [ed[1]])


def test_accept_command_token_checks_claims_but_not_signature(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    header, payload, _ = sign_token({"exp": NOW, "etchaBuildManifest": "m"}, ed[0]).split(".")
    unsigned = f"{header}.{payload}.garbage"
    assert accept_command_token(unsigned, now=NOW).build_manifest == "m"
    with pytest.raises(VerifyError) as info:
        accept_command_token(unsigned, now=NOW + 31)
    assert info.value.reason == "expired"
    with pytest.raises(VerifyError) as info:
        accept_command_token("not a token", now=NOW)
    assert info.value.reason == "malformed"


# --- malformed input never raises anything but VerifyError/TokenError --------------------------


def test_verified_token_cannot_be_constructed_directly() -> None:
    fields: dict[str, Any] = {
        "raw": "a.b.c",
        "header": {},
        "claims": {},
        "key_id": "",
        "pattern_entrypoint": "",
        "pattern_files": None,
        "run_vars": {},
        "build_manifest": "",
        "version": "",
        "iat": None,
        "exp": None,
        "nbf": None,
        "jti": "",
        "aud": (),
        "iss": "",
        "sub": "",
    }
    with pytest.raises(TypeError, match="verify_token"):
        VerifiedToken(**fields)
    with pytest.raises(TypeError, match="verify_token"):
        VerifiedToken(**fields, _origin=object())


def _shapes(ed_token: str) -> list[str]:
    header, payload, signature = ed_token.split(".")
    bad_headers = [
        b"not json",
        b"[]",
        b"1",
        b"{}",
        b'{"alg":1}',
        b'{"alg":null}',
        b'{"alg":"EdDSA"',
        bytes([0xFF, 0xFE]),
        b"[" * 100000,
        b'{"alg":NaN}',
    ]
    return [f"{b64u(h)}.{payload}.{signature}" for h in bad_headers] + [
        "",
        "a",
        "a.b",
        "a.b.c.d",
        "..",
        f".{payload}.{signature}",
        f"{header}..{signature}",
        f"{header}.{payload}.{signature}.",
        f"{header}=.{payload}.{signature}",
        f"{header}.{payload}=.{signature}",
        f"{header}+.{payload}.{signature}",
        f"{header}.{payload}/.{signature}",
        f" {header}.{payload}.{signature}",
        f"{header}\n.{payload}.{signature}",
        f"{header}.{payload}.{signature}é",
        f"{header}A.{payload}.{signature}",  # length % 4 == 1
        "!!!.???.***",
    ]


def test_every_malformed_shape_is_a_malformed_verify_error(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    for token in _shapes(sign_token({"a": 1}, ed[0])):
        with pytest.raises(VerifyError) as info:
            verify_token(token, [ed[1]], now=NOW)
        assert info.value.reason == "malformed", token
        assert len(token) < 8 or token not in str(info.value)
        with pytest.raises(TokenError):
            decode_token(token)


def test_bad_signature_parts_fail_verification_but_still_decode(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    header, payload, signature = sign_token({"a": 1}, ed[0]).split(".")
    for bad, reason in [
        (signature + "==", "malformed"),
        (signature + " ", "malformed"),
        (signature + "AAA", "malformed"),  # length % 4 == 1
        (signature + "A", "no_match"),
        (signature[:-1] + "*", "malformed"),
        (signature + "AA", "no_match"),
        ("", "no_match"),
    ]:
        token = f"{header}.{payload}.{bad}"
        assert reason_of(token, [ed[1]]) == reason
        assert decode_token(token).claims == {"a": 1}


def test_trailing_newline_is_tolerated(ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"a": 1}, ed[0])
    for variant in (token + "\n", token + "\r\n", "\n" + token + "\n\n"):
        assert verify_token(variant, [ed[1]], now=NOW).raw == token
        assert decode_token(variant).raw == token


@pytest.mark.parametrize(
    ("payload", "claim"),
    [
        (b'"just a string"', "object"),
        (b"[1,2]", "object"),
        (b"null", "object"),
        (b"not json", "JSON"),
        (b'{"exp":"tomorrow"}', "exp"),
        (b'{"exp":true}', "exp"),
        (b'{"nbf":[1]}', "nbf"),
        (b'{"iat":"now"}', "iat"),
        (b'{"etchaPattern":[]}', "etchaPattern"),
        (b'{"etchaPattern":"x"}', "etchaPattern"),
        (b'{"etchaPattern":{"entrypoint":1}}', "entrypoint"),
        (b'{"etchaPattern":{"entrypoint":"/m","files":[]}}', "files"),
        (b'{"etchaPattern":{"entrypoint":"/m","files":{"/m":1}}}', "files"),
        (b'{"etchaRunVars":[]}', "etchaRunVars"),
        (b'{"etchaRunVars":"x"}', "etchaRunVars"),
        (b'{"etchaRunEnv":"x"}', "etchaRunEnv"),
        (b'{"etchaBuildManifest":["x"]}', "etchaBuildManifest"),
        (b'{"etchaVersion":1}', "etchaVersion"),
        (b'{"aud":1}', "aud"),
        (b'{"aud":["a",1]}', "aud"),
        (b'{"iss":{}}', "iss"),
        (b'{"sub":false}', "sub"),
        (b'{"jti":2}', "jti"),
        (b'{"exp":NaN}', "JSON"),
        (b'{"exp":Infinity}', "JSON"),
        (b'{"exp":1e999}', "JSON"),
        (b'{"n":' + b"9" * 5000 + b"}", "JSON"),
        (b'{"deep":' + b"[" * 200000 + b"]" * 200000 + b"}", "JSON"),
        (b"\xff\xfe{}", "JSON"),
    ],
)
def test_signed_payloads_with_wrong_claim_types_are_malformed(
    payload: bytes, claim: str, ed: tuple[SigningKey, VerifyKey]
) -> None:
    token = sign_raw(ed_header(), payload, ed[0])
    with pytest.raises(VerifyError) as info:
        verify_token(token, [ed[1]], now=NOW)
    assert info.value.reason == "malformed"
    assert claim in str(info.value)
    with pytest.raises(VerifyError):
        accept_command_token(token, now=NOW)


def test_null_claims_and_valid_shapes_are_accepted(ed: tuple[SigningKey, VerifyKey]) -> None:
    payload = (
        b'{"exp":null,"nbf":null,"iat":1.5,"aud":["a","b"],"iss":null,'
        b'"etchaPattern":{"entrypoint":"/m","files":null},"etchaRunVars":null}'
    )
    token = verify_token(sign_raw(ed_header(), payload, ed[0]), [ed[1]], now=NOW)
    assert (token.exp, token.nbf, token.iat) == (None, None, 1)
    assert token.aud == ("a", "b") and token.iss == ""
    assert token.pattern_entrypoint == "/m" and token.pattern_files is None


def test_megabytes_of_garbage_are_malformed(ed: tuple[SigningKey, VerifyKey]) -> None:
    garbage = [
        "A" * 3_000_000,
        "A" * 3_000_000 + "." + "B" * 3_000_000 + ".C",
        ".".join(["QUFB"] * 1_000_000),
        "eyJ" + "\x00" * 2_000_000,
    ]
    for token in garbage:
        with pytest.raises(VerifyError) as info:
            verify_token(token, [ed[1]], now=NOW)
        assert info.value.reason == "malformed"


def test_a_large_signed_payload_verifies_and_an_oversized_token_is_refused(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    big = sign_token({"etchaRunVars": {"blob": "x" * 4_000_000}}, ed[0])
    assert len(verify_token(big, [ed[1]], now=NOW).run_vars["blob"]) == 4_000_000
    too_big = sign_token(
        {"etchaRunVars": {"blob": "x" * (DEFAULT_MAX_TOKEN_BYTES * 3 // 4)}}, ed[0]
    )
    assert len(too_big) > DEFAULT_MAX_TOKEN_BYTES
    with pytest.raises(VerifyError, match="at most") as info:
        verify_token(too_big, [ed[1]], now=NOW)
    assert info.value.reason == "malformed"
    with pytest.raises(TokenError, match="at most"):
        decode_token(too_big)


def test_non_string_input_is_malformed(ed: tuple[SigningKey, VerifyKey]) -> None:
    for value in (None, b"a.b.c", 12):
        with pytest.raises(VerifyError) as info:
            verify_token(value, [ed[1]], now=NOW)  # type: ignore[arg-type]
        assert info.value.reason == "malformed"


_FUZZ_KEYS = generate_keys("ed25519", "fuzz")
_FUZZ_TOKEN = sign_token(
    {"etchaPattern": {"entrypoint": "/m", "files": {"/m": "{}"}}, "exp": NOW},
    parse_signing_key(_FUZZ_KEYS[0]),
)
_FUZZ_VERIFY_KEY = parse_verify_key(_FUZZ_KEYS[1])
_FUZZ_CLAIMS = dict(decode_token(_FUZZ_TOKEN).claims)
_FUZZ_HEADER, _, _FUZZ_SIGNATURE = _FUZZ_TOKEN.split(".")
_B64_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_TOKENISH = "AZaz09-_.=+/\n"
_CLAIM_NAMES = [
    "exp", "nbf", "iat", "jti", "aud", "iss", "sub", "etchaPattern", "etchaRunVars",
    "etchaRunEnv", "etchaBuildManifest", "etchaVersion", "alg", "kid", "typ", "x",
]  # fmt: skip
_JSON_SNIPPETS = [
    "null", "true", "0", "-1", "1.5", "1e999", "NaN", "-Infinity", '"x"', '""', "[]", '["a",1]',
    '["a"]', "{}", '{"entrypoint":1}', '{"entrypoint":"/m","files":{"/m":1}}',
    '{"entrypoint":"/m","files":null}', '{"entrypoint":"/m","files":[]}', '"EdDSA"', '"none"',
    '"HS256"', '"RS256"', "1700000000", "99999999999999999999", "[" * 40, '"\\ud800"',
]  # fmt: skip
#: Examples of the bounded fuzz run in `make test` (issue 12: at least 20,000); derandomized.
FUZZ_EXAMPLES = 20_000


def _fuzz_object(data: bytes) -> bytes:
    """A JSON object (or, for odd lengths, broken JSON) built from claim names and snippets."""
    items = [
        f'"{_CLAIM_NAMES[a % len(_CLAIM_NAMES)]}":{_JSON_SNIPPETS[b % len(_JSON_SNIPPETS)]}'
        for a, b in zip(data[::2], data[1::2], strict=False)
    ]
    text = "{" + ",".join(items) + "}"
    return (text[: len(text) // 2] if len(data) % 2 else text).encode()


def _fuzz_text(mode: int, data: bytes) -> str:
    """Turn hypothesis' bytes into one of six token-shaped inputs, cheaply."""
    if mode == 0:  # arbitrary text
        return data.decode("utf-8", "replace")
    if mode == 1:  # text from the token alphabet
        return "".join(_TOKENISH[b % len(_TOKENISH)] for b in data)
    if mode == 2:  # the valid token with one slice replaced by base64url-ish text
        at = int.from_bytes(data[:2] or b"\0", "big") % (len(_FUZZ_TOKEN) + 1)
        cut = data[2] % 41 if len(data) > 2 else 0
        insert = "".join((_B64_CHARS + ".=")[b % 66] for b in data[3:])
        return _FUZZ_TOKEN[:at] + insert + _FUZZ_TOKEN[at + cut :]
    if mode == 3:  # the valid header and signature around another payload: cannot match
        return f"{_FUZZ_HEADER}.{b64u(_fuzz_object(data))}.{_FUZZ_SIGNATURE}"
    if mode == 4:  # the valid header and signature around arbitrary payload bytes
        return f"{_FUZZ_HEADER}.{b64u(data)}.{_FUZZ_SIGNATURE}"
    half = len(data) // 2  # arbitrary header and payload objects, arbitrary signature
    signature = "".join(_B64_CHARS[b % 64] for b in data[half:])
    return f"{b64u(_fuzz_object(data[:half]))}.{b64u(_fuzz_object(data[half:]))}.{signature}"


@pytest.mark.timeout(600)  # ~25 s of CPU here; a generous bound for slow, shared CI machines
@settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.integers(min_value=0, max_value=5), st.binary(max_size=300))
def test_fuzzed_tokens_only_raise_verify_error_and_never_verify_other_claims(
    mode: int, data: bytes
) -> None:
    text = _fuzz_text(mode, data)
    try:
        verified = verify_token(text, [_FUZZ_VERIFY_KEY], now=NOW)
    except VerifyError as exc:
        assert exc.reason in ("malformed", "no_match", "wrong_type")
    else:  # only the signed content can verify: no forgery
        assert dict(verified.claims) == _FUZZ_CLAIMS
    with contextlib.suppress(TokenError):
        decode_token(text)
    with contextlib.suppress(VerifyError):
        accept_command_token(text, now=NOW)


@settings(max_examples=400, deadline=None)
@given(
    st.integers(min_value=0, max_value=len(_FUZZ_TOKEN) - 1),
    st.sampled_from(list("AQgw_-.=+/ \n\x00é")),
)
def test_single_character_mutations_never_verify_or_crash(index: int, char: str) -> None:
    mutated = _FUZZ_TOKEN[:index] + char + _FUZZ_TOKEN[index + 1 :]
    key = parse_verify_key(_FUZZ_KEYS[1])
    try:
        verified = verify_token(mutated, [key], now=NOW)
    except VerifyError as exc:
        assert exc.reason in ("malformed", "no_match", "wrong_type")
    else:
        # only a mutation that leaves the signed bytes' meaning intact can verify
        assert verified.claims == decode_token(_FUZZ_TOKEN).claims


def test_stdlib_base64_fallback_behaves_like_pybase64(
    monkeypatch: pytest.MonkeyPatch, ed: tuple[SigningKey, VerifyKey]
) -> None:
    import agent.jws.compact

    token = sign_token({"etchaRunVars": {"k": "v" * 1000}}, ed[0])
    header, payload, signature = token.split(".")
    cases = [
        token,
        f"{header}.{payload}.{signature}==",
        f"{header}.{payload}+.{signature}",
        f"{header}.{payload}.{signature[:-1]}*",
        f"{header}.{payload}.{signature}AAA",
        f"{header}.{payload}.{signature}A",
        f"{header}.{payload}.",
        f"{header}.{payload}.{_non_canonical(signature)}",
    ]

    def outcome(text: str) -> str:
        try:
            return repr(sorted(verify_token(text, [ed[1]], now=NOW).claims))
        except VerifyError as exc:
            return exc.reason

    fast = [outcome(c) for c in cases]
    monkeypatch.setattr(agent.jws.compact, "_fast_b64decode", None)
    assert [outcome(c) for c in cases] == fast
    assert fast == [repr(["etchaRunVars"]), *["malformed"] * 4, "no_match", "no_match", "malformed"]


# --- canonical signatures, high-S, token identity, size bound (issue 12) -----------------------

_B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# P-256 group order
_P256_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


def _non_canonical(part: str) -> str:
    """The same bytes spelled differently: set the unused low bits of the last character."""
    unused = {2: 0x0F, 3: 0x03}[len(part) % 4]
    last = _B64URL.index(part[-1])
    assert last & unused == 0, "a canonical encoder leaves the unused bits zero"
    return part[:-1] + _B64URL[last | unused]


def _lenient_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.mark.parametrize("pair", ["ed", "ecp", "rsa_pair"])
def test_signature_with_non_zero_unused_bits_is_malformed(
    pair: str, request: pytest.FixtureRequest
) -> None:
    signer, verifier = request.getfixturevalue(pair)
    token = sign_token({"a": 1}, signer)
    header, payload, signature = token.split(".")
    twin = _non_canonical(signature)
    # Go's default decoder (like Python's) reads both spellings as the same signature bytes,
    assert _lenient_decode(twin) == _lenient_decode(signature)
    # but only the canonical spelling is accepted.
    assert verify_token(token, [verifier], now=NOW).claims == {"a": 1}
    with pytest.raises(VerifyError, match="canonical") as info:
        verify_token(f"{header}.{payload}.{twin}", [verifier], now=NOW)
    assert info.value.reason == "malformed"


def test_header_or_payload_with_non_zero_unused_bits_is_malformed(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    token = sign_raw(ed_header(), b'{"a":1}', ed[0])  # payload of 7 bytes: 10 characters
    header, payload, signature = token.split(".")
    for bad in (
        f"{_non_canonical(header)}.{payload}.{signature}",
        f"{header}.{_non_canonical(payload)}.{signature}",
    ):
        assert reason_of(bad, [ed[1]]) == "malformed"
        with pytest.raises(TokenError, match="canonical"):
            decode_token(bad)


def test_high_s_es256_signature_still_verifies(ecp: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"jti": "one", "a": 1}, ecp[0])
    header, payload, signature = token.split(".")
    raw = _lenient_decode(signature)
    r, s = raw[:32], int.from_bytes(raw[32:], "big")
    flipped = f"{header}.{payload}.{b64u(r + (_P256_N - s).to_bytes(32, 'big'))}"
    assert flipped != token
    # Go's signer (and so Etcha) does not normalise s: both halves of the curve are accepted.
    assert verify_token(flipped, [ecp[1]], now=NOW).claims == {"jti": "one", "a": 1}
    assert verify_token(token, [ecp[1]], now=NOW).claims == {"jti": "one", "a": 1}
    # so the raw string is not an identity; token_identity is.
    assert token_identity(flipped) == token_identity(token)


def test_token_identity_is_a_hash_of_header_and_payload_only(
    ed: tuple[SigningKey, VerifyKey],
) -> None:
    token = sign_token({"jti": "a"}, ed[0])
    header, payload, _ = token.split(".")
    expected = hashlib.sha256(f"{header}.{payload}".encode()).hexdigest()
    assert token_identity(token) == expected
    assert token_identity(token + "\n") == expected
    assert token_identity(f"{header}.{payload}.") == expected
    assert token_identity(sign_token({"jti": "b"}, ed[0])) != expected


def test_size_bound_is_a_parameter_of_verify_and_decode(ed: tuple[SigningKey, VerifyKey]) -> None:
    token = sign_token({"etchaRunVars": {"blob": "x" * 1000}}, ed[0])
    assert verify_token(token, [ed[1]], now=NOW, max_bytes=len(token)).claims
    assert decode_token(token, max_bytes=len(token)).claims
    with pytest.raises(VerifyError, match=f"expected at most {len(token) - 1} bytes") as info:
        verify_token(token, [ed[1]], now=NOW, max_bytes=len(token) - 1)
    assert info.value.reason == "malformed"
    with pytest.raises(TokenError, match="at most"):
        decode_token(token, max_bytes=len(token) - 1)
    with pytest.raises(VerifyError, match="at most"):
        accept_command_token(token, now=NOW, max_bytes=len(token) - 1)


def test_verify_for_source_takes_the_size_bound(ed: tuple[SigningKey, VerifyKey]) -> None:
    import asyncio

    from agent.config.schema import config_from_dict
    from agent.trust.verify import verify_for_source

    private, public = generate_keys("ed25519", "src")
    token = sign_token({"etchaRunVars": {"blob": "x" * 1000}}, parse_signing_key(private))
    config = config_from_dict({"run": {"verifyKeys": [public]}})
    ok = asyncio.run(verify_for_source(token, config=config, source="", max_bytes=len(token)))
    assert ok.run_vars["blob"] == "x" * 1000
    with pytest.raises(VerifyError, match="more than the") as info:
        asyncio.run(verify_for_source(token, config=config, source="", max_bytes=len(token) - 1))
    assert info.value.reason == "malformed"
    assert DEFAULT_MAX_TOKEN_BYTES == 8 * 1024 * 1024
