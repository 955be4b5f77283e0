"""agent.jws.keys: Etcha key strings, every accepted material form, sign/verify, generation."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from support import INTEROP_COPY, SHARED_DIR

from agent.core.errors import KeyFormatError
from agent.jws.keys import (
    ALGORITHMS,
    SigningKey,
    VerifyKey,
    generate_keys,
    parse_signing_key,
    parse_verify_key,
)

DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PKCS1_PUBLIC = serialization.PublicFormat.PKCS1
NOENC = serialization.NoEncryption()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- interop vectors ---------------------------------------------------------------------------


def test_interop_copy_matches_shared() -> None:
    shared = SHARED_DIR / "interop" / "vectors.json"
    if not shared.exists():
        pytest.skip("shared/ is not beside the repository")
    assert json.loads(INTEROP_COPY.read_text()) == json.loads(shared.read_text())


def test_every_interop_private_key_derives_its_documented_public_key(
    interop: dict[str, Any],
) -> None:
    for pair in interop["keyPairs"]:
        key = parse_signing_key(pair["privateKey"])
        assert key.kid == pair["id"]
        assert key.algorithm == "ed25519private"
        assert key.jws_alg == "EdDSA"
        assert str(key.public()) == pair["publicKey"]
        assert parse_verify_key(pair["publicKey"]) == key.public()


def test_every_interop_public_key_parses(interop: dict[str, Any]) -> None:
    keys = [parse_verify_key(text) for text in interop["publicKeys"]]
    assert [k.kid for k in keys] == ["zbUeB0b0ni", "vault"]
    assert all(k.algorithm == "ed25519public" for k in keys)
    assert [str(k) for k in keys] == interop["publicKeys"]


def test_raw_32_byte_vault_public_key_verifies_like_its_spki_form() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    raw = private.public_key().public_bytes_raw()
    spki = private.public_key().public_bytes(DER, SPKI)
    signature = private.sign(b"data")
    for text in (f"ed25519public:{b64(raw)}:vault", f"ed25519public:{b64(spki)}:vault"):
        key = parse_verify_key(text)
        assert key.verify(signature, b"data")
        assert not key.verify(signature, b"other")


# --- Ed25519 private forms ---------------------------------------------------------------------


def test_ed25519_private_accepts_pkcs8_seed_and_seed_plus_public() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    seed = private.private_bytes_raw()
    public = private.public_key().public_bytes_raw()
    expected = private.sign(b"msg")
    forms = [private.private_bytes(DER, PKCS8, NOENC), seed, seed + public]
    for material in forms:
        key = parse_signing_key(f"ed25519private:{b64(material)}:k")
        assert key.sign(b"msg") == expected  # Ed25519 is deterministic
        assert key.public().verify(expected, b"msg")


def test_ed25519_seed_plus_public_with_wrong_public_half_is_refused() -> None:
    seed = ed25519.Ed25519PrivateKey.generate().private_bytes_raw()
    other = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    with pytest.raises(KeyFormatError, match="public half does not match"):
        parse_signing_key(f"ed25519private:{b64(seed + other)}")


def test_ed25519_signature_is_identical_to_cryptography(interop: dict[str, Any]) -> None:
    text = interop["keyPairs"][0]["privateKey"]
    der = base64.b64decode(text.split(":")[1])
    reference = serialization.load_der_private_key(der, None)
    assert isinstance(reference, ed25519.Ed25519PrivateKey)
    assert parse_signing_key(text).sign(b"payload") == reference.sign(b"payload")


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 4096, 1 << 20])
def test_ed25519_signatures_and_public_keys_equal_pynacl_and_cryptography(size: int) -> None:
    import os

    import nacl.signing

    seed = os.urandom(32)
    data = os.urandom(size)
    key = parse_signing_key(f"ed25519private:{b64(seed)}")
    reference = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    assert key.sign(data) == reference.sign(data) == nacl.signing.SigningKey(seed).sign(data)[:64]
    public = reference.public_key().public_bytes(DER, SPKI)
    assert key.public().verify(key.sign(data), data)
    assert str(key.public()).split(":")[1] == b64(public)


def test_ed25519_signing_does_not_import_nacl_signing(interop: dict[str, Any]) -> None:
    code = (
        "import sys; from agent.jws.keys import parse_signing_key;"
        f"k = parse_signing_key({interop['keyPairs'][0]['privateKey']!r});"
        "sig = k.sign(b'x'); assert len(sig) == 64;"
        "print('nacl.signing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_ed25519_verification_agrees_with_pynacl_and_it_and_generation_skip_nacl_signing(
    interop: dict[str, Any],
) -> None:
    """The daemon verifies every push and may generate its audit key: through libsodium
    directly (issue 14, memory), with PyNaCl's answers on a good signature, a changed payload
    and a changed signature."""
    import nacl.exceptions
    import nacl.signing

    pair = interop["keyPairs"][0]
    good = parse_signing_key(pair["privateKey"]).sign(b"payload")
    bad = bytes([good[0] ^ 1]) + good[1:]
    cases = [(good, b"payload"), (good, b"payloaD"), (bad, b"payload")]
    reference = nacl.signing.VerifyKey(base64.b64decode(pair["publicKey"].split(":")[1])[12:])
    expected = []
    for signature, data in cases:
        try:
            reference.verify(data, signature)
            expected.append(True)
        except nacl.exceptions.BadSignatureError:
            expected.append(False)
    code = (
        "import sys; from agent.jws.keys import generate_keys, parse_verify_key;"
        f"k = parse_verify_key({pair['publicKey']!r}); generate_keys('ed25519');"
        f"print([k.verify(s, d) for s, d in {cases!r}], 'nacl.signing' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert expected == [True, False, False]
    assert out.stdout.strip() == f"{expected} False"


# --- ECDSA P-256 -------------------------------------------------------------------------------


def test_ecp256_private_accepts_pkcs8_sec1_and_raw_scalar(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    scalar = ec_key.private_numbers().private_value.to_bytes(32, "big")
    forms = [
        ec_key.private_bytes(DER, PKCS8, NOENC),
        ec_key.private_bytes(DER, TRADITIONAL, NOENC),  # SEC1
        scalar,
    ]
    expected_public = b64(ec_key.public_key().public_bytes(DER, SPKI))
    for material in forms:
        key = parse_signing_key(f"ecp256private:{b64(material)}:e")
        assert key.jws_alg == "ES256"
        assert str(key.public()) == f"ecp256public:{expected_public}:e"


def test_ecp256_public_accepts_spki_and_raw_uncompressed_point(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    signer = parse_signing_key(f"ecp256private:{b64(ec_key.private_bytes(DER, PKCS8, NOENC))}")
    signature = signer.sign(b"data")
    point = ec_key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    assert len(point) == 65
    for material in (ec_key.public_key().public_bytes(DER, SPKI), point):
        key = parse_verify_key(f"ecp256public:{b64(material)}")
        assert key.verify(signature, b"data")
        assert not key.verify(signature, b"datA")


def test_es256_signature_is_raw_r_s_that_cryptography_accepts(
    ec_key: ec.EllipticCurvePrivateKey,
) -> None:
    signer = parse_signing_key(f"ecp256private:{b64(ec_key.private_bytes(DER, PKCS8, NOENC))}")
    signature = signer.sign(b"data")
    assert len(signature) == 64
    der = encode_dss_signature(
        int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
    )
    ec_key.public_key().verify(der, b"data", ec.ECDSA(hashes.SHA256()))


def test_ecp256_other_curves_and_bad_points_are_refused() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(KeyFormatError, match="curve secp384r1"):
        parse_signing_key(f"ecp256private:{b64(p384.private_bytes(DER, PKCS8, NOENC))}")
    with pytest.raises(KeyFormatError, match="curve secp384r1"):
        parse_verify_key(f"ecp256public:{b64(p384.public_key().public_bytes(DER, SPKI))}")
    with pytest.raises(KeyFormatError, match="not on the curve"):
        parse_verify_key("ecp256public:" + b64(bytes([4]) + bytes([1]) * 64))
    with pytest.raises(KeyFormatError, match="out of range"):
        parse_signing_key("ecp256private:" + b64(bytes(32)))


# --- RSA ---------------------------------------------------------------------------------------


def test_rsa_private_accepts_pkcs8_and_pkcs1(rsa_key: rsa.RSAPrivateKey) -> None:
    expected_public = b64(rsa_key.public_key().public_bytes(DER, SPKI))
    for fmt in (PKCS8, TRADITIONAL):  # TraditionalOpenSSL DER of RSA is PKCS#1
        key = parse_signing_key(f"rsa2048private:{b64(rsa_key.private_bytes(DER, fmt, NOENC))}")
        assert key.jws_alg == "RS256"
        assert str(key.public()) == f"rsa2048public:{expected_public}"


def test_rsa_public_accepts_spki_and_pkcs1_and_signs_pkcs1v15_sha256(
    rsa_key: rsa.RSAPrivateKey,
) -> None:
    signer = parse_signing_key(f"rsa2048private:{b64(rsa_key.private_bytes(DER, PKCS8, NOENC))}")
    signature = signer.sign(b"data")
    rsa_key.public_key().verify(signature, b"data", padding.PKCS1v15(), hashes.SHA256())
    for fmt in (SPKI, PKCS1_PUBLIC):
        key = parse_verify_key(f"rsa2048public:{b64(rsa_key.public_key().public_bytes(DER, fmt))}")
        assert key.verify(signature, b"data")
        assert not key.verify(signature, b"Data")


def test_rsa_keys_below_2048_bits_are_refused() -> None:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505
    with pytest.raises(KeyFormatError, match="1024-bit"):
        parse_signing_key(f"rsa2048private:{b64(small.private_bytes(DER, PKCS8, NOENC))}")
    with pytest.raises(KeyFormatError, match="1024-bit"):
        parse_verify_key(f"rsa2048public:{b64(small.public_key().public_bytes(DER, SPKI))}")


# --- accepts_alg and verify robustness ---------------------------------------------------------


def test_accepts_alg_matches_key_type_and_rsa_takes_rs256_and_es256() -> None:
    keys = {alg: parse_verify_key(generate_keys(alg)[1]) for alg in ("ed25519", "ecp256")}
    keys["rsa2048"] = parse_verify_key(generate_keys("rsa2048")[1])
    table = {
        alg: {j: key.accepts_alg(j) for j in ("EdDSA", "ES256", "RS256", "HS256", "none")}
        for alg, key in keys.items()
    }
    assert table == {
        "ed25519": {"EdDSA": True, "ES256": False, "RS256": False, "HS256": False, "none": False},
        "ecp256": {"EdDSA": False, "ES256": True, "RS256": False, "HS256": False, "none": False},
        "rsa2048": {"EdDSA": False, "ES256": True, "RS256": True, "HS256": False, "none": False},
    }


@pytest.mark.parametrize("algorithm", ["ed25519", "ecp256", "rsa2048"])
def test_verify_returns_false_and_never_raises_on_garbage(algorithm: str) -> None:
    private, public = generate_keys(algorithm)
    key = parse_verify_key(public)
    good = parse_signing_key(private).sign(b"data")
    assert key.verify(good, b"data")
    for signature in (b"", b"\x00", good[:-1], good + b"\x00", b"\xff" * len(good), b"\x00" * 64):
        assert key.verify(signature, b"data") is False
    assert key.verify(good, b"") is False


# --- parse errors, and no material in messages -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("ed25519private", r"got 1 ':'-separated parts"),
        ("a:b:c:d", r"got 4 ':'-separated parts"),
        ("", r"got 1 ':'-separated parts"),
        ("ED25519PRIVATE:AAAA", r"unknown algorithm"),
        ("aes256:AAAA", r"unknown algorithm"),
        ("ed25519public:MCowBQYDK2VwAyEAw7eTEuEH0+TfgtX3zB+JZVnYD0eskY6qn3n7ZCA7wWM=", "private"),
        ("ed25519private:not base64!", r"invalid base64"),
        ("ed25519private:AAA", r"invalid base64"),  # missing padding
        ("ed25519private:", r"got none"),
        ("ed25519private:AAAA", r"none of these"),
        ("rsa2048private:AAAA", r"neither"),
        ("ecp256private:AAAA", r"none of these"),
    ],
)
def test_bad_signing_key_strings_are_key_format_errors(text: str, pattern: str) -> None:
    with pytest.raises(KeyFormatError, match=pattern):
        parse_signing_key(text)


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("ed25519public", r"got 1 ':'-separated parts"),
        ("ed25519private:MC4CAQAwBQYDK2VwBCIEIBq+BhDRYk8OJv1ksMwKtf0td5p3FGwypXq96gHKefGS", "publ"),
        ("ed25519public:AAAA", r"neither"),
        ("ecp256public:AAAA", r"neither"),
        ("rsa2048public:AAAA", r"neither"),
        ("ecp256public:MCowBQYDK2VwAyEAw7eTEuEH0+TfgtX3zB+JZVnYD0eskY6qn3n7ZCA7wWM=", "Ed25519"),
        ("ed25519public:-_-_", r"invalid base64"),  # URL-safe alphabet is not Etcha's
    ],
)
def test_bad_verify_key_strings_are_key_format_errors(text: str, pattern: str) -> None:
    with pytest.raises(KeyFormatError, match=pattern):
        parse_verify_key(text)


def _corrupt(material: str) -> str:
    raw = bytearray(base64.b64decode(material))
    raw[1] ^= 0xFF  # break the DER length
    return b64(bytes(raw))


@pytest.mark.parametrize("algorithm", ["ed25519", "ecp256", "rsa2048"])
def test_error_messages_never_contain_key_material(algorithm: str) -> None:
    private, _public = generate_keys(algorithm, "kid1")
    family = private.split(":")[0]
    material = private.split(":")[1]
    bad_texts = [
        f"{family}:{_corrupt(material)}:kid1",
        f"{family}:{material[:-4]}:kid1",  # truncated
        f"{family}:{material}!:kid1",  # bad base64
        f"{family}:{material}:kid1:extra",
        f"nosuchalg:{material}:kid1",
        f"{material}:kid1",  # algorithm prefix forgotten
        f"{family}:kid1:{material}",  # id and material swapped
    ]
    for text in bad_texts:
        with pytest.raises(KeyFormatError) as info:
            parse_signing_key(text)
        message = str(info.value)
        for piece in re.split(r"[:!]", text):
            if len(piece) > 12 and piece not in ALGORITHMS:  # a material-sized fragment
                assert piece not in message
                assert piece[:16] not in message
        assert "\n" not in message
    with pytest.raises(KeyFormatError) as info:
        parse_verify_key(private)
    assert material[:16] not in str(info.value)


def test_repr_and_str_of_signing_key_hide_material(interop: dict[str, Any]) -> None:
    text = interop["keyPairs"][0]["privateKey"]
    material = text.split(":")[1]
    key = parse_signing_key(text)
    for shown in (repr(key), str(key), f"{key!r} {key}", repr([key])):
        assert material[:12] not in shown
        assert "reqYEklgP4" in shown


def test_verify_key_str_round_trips_and_repr_is_short(interop: dict[str, Any]) -> None:
    text = interop["keyPairs"][1]["publicKey"]
    key = parse_verify_key(text)
    assert str(key) == text
    assert parse_verify_key(str(key)) == key
    assert repr(key) == "VerifyKey(algorithm='ed25519public', kid='lAASVe7woP')"
    no_id = parse_verify_key(text.rsplit(":", 1)[0])
    assert no_id.kid == "" and str(no_id) == text.rsplit(":", 1)[0]


def test_types_are_the_documented_ones() -> None:
    assert ALGORITHMS == (
        "ed25519private",
        "ed25519public",
        "ecp256private",
        "ecp256public",
        "rsa2048private",
        "rsa2048public",
    )
    private, public = generate_keys()
    assert isinstance(parse_signing_key(private), SigningKey)
    assert isinstance(parse_verify_key(public), VerifyKey)


# --- generation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "family", "private_type", "public_type"),
    [
        ("best", "ed25519", ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
        ("ed25519", "ed25519", ed25519.Ed25519PrivateKey, ed25519.Ed25519PublicKey),
        ("ecp256", "ecp256", ec.EllipticCurvePrivateKey, ec.EllipticCurvePublicKey),
        ("rsa2048", "rsa2048", rsa.RSAPrivateKey, rsa.RSAPublicKey),
    ],
)
def test_generated_keys_are_pkcs8_and_spki_with_a_shared_id(
    algorithm: str, family: str, private_type: type, public_type: type
) -> None:
    private, public = generate_keys(algorithm, "name-1")
    p_alg, p_material, p_id = private.split(":")
    v_alg, v_material, v_id = public.split(":")
    assert (p_alg, v_alg) == (f"{family}private", f"{family}public")
    assert p_id == v_id == "name-1"
    for material in (p_material, v_material):
        assert base64.b64encode(base64.b64decode(material, validate=True)).decode() == material
    loaded_private = serialization.load_der_private_key(base64.b64decode(p_material), None)
    loaded_public = serialization.load_der_public_key(base64.b64decode(v_material))
    assert isinstance(loaded_private, private_type)
    assert isinstance(loaded_public, public_type)
    # re-serialising as PKCS#8 / SPKI gives the same bytes: the material is in those formats
    assert loaded_private.private_bytes(DER, PKCS8, NOENC) == base64.b64decode(p_material)
    assert loaded_public.public_bytes(DER, SPKI) == base64.b64decode(v_material)
    key = parse_signing_key(private)
    assert str(key.public()) == public
    assert parse_verify_key(public).verify(key.sign(b"x"), b"x")


def test_generated_ids_are_10_random_alphanumerics() -> None:
    ids = set()
    for _ in range(20):
        private, public = generate_keys()
        kid = private.split(":")[2]
        assert re.fullmatch(r"[A-Za-z0-9]{10}", kid)
        assert public.endswith(f":{kid}")
        ids.add(kid)
    assert len(ids) == 20


def test_generated_ed25519_private_key_is_48_byte_pkcs8() -> None:
    private, public = generate_keys("ed25519")
    raw = base64.b64decode(private.split(":")[1])
    assert len(raw) == 48 and raw.hex().startswith("302e020100300506032b657004220420")
    assert public.split(":")[1].startswith("MCowBQYDK2VwAyEA")


def test_generate_refuses_unknown_algorithm_and_unusable_ids() -> None:
    with pytest.raises(KeyFormatError, match="expected an algorithm of"):
        generate_keys("dsa")
    for kid in ("a:b", " a", "a\n"):
        with pytest.raises(KeyFormatError, match="key id"):
            generate_keys("ed25519", kid)


def test_importing_keys_and_parsing_ed25519_does_not_import_cryptography(
    interop: dict[str, Any],
) -> None:
    code = (
        "import sys; from agent.jws.keys import parse_signing_key, parse_verify_key;"
        f"k = parse_signing_key({interop['keyPairs'][0]['privateKey']!r});"
        f"v = parse_verify_key({interop['publicKeys'][1]!r});"
        "assert v.verify(k.sign(b'x'), b'x') is False;"
        "assert k.public().verify(k.sign(b'x'), b'x');"
        "print('cryptography' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_signing_key_is_read_only() -> None:
    key = parse_signing_key(generate_keys("ed25519", "k")[0])
    with pytest.raises(AttributeError, match="read-only"):
        key.kid = "other"
    with pytest.raises(AttributeError, match="read-only"):
        del key.algorithm
    assert (key.kid, key.algorithm, repr(key)) == (
        "k",
        "ed25519private",
        "SigningKey(algorithm='ed25519private', kid='k')",
    )
