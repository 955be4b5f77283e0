"""Etcha key strings, key generation, and the sign/verify primitives.

A key string is ``<algorithm>:<standard base64 material>[:<id>]`` (exactly two or three
``:``-separated parts). Accepted material per algorithm:

==================  ==========================================================================
``ed25519private``  PKCS#8 DER; raw 32-byte seed; raw 64-byte seed‖public key (Go's form)
``ed25519public``   SPKI DER; raw 32-byte public key (OpenBao/Vault export)
``ecp256private``   PKCS#8 DER; SEC1 ``EC PRIVATE KEY`` DER; raw 32-byte scalar
``ecp256public``    SPKI DER; raw 65-byte uncompressed point ``04‖X‖Y``
``rsa2048private``  PKCS#8 DER; PKCS#1 DER (at least 2048 bits)
``rsa2048public``   SPKI DER; PKCS#1 DER (at least 2048 bits)
==================  ==========================================================================

Invariants:

- Keys are parsed eagerly: a string that parses is usable, so a bad key fails at config load.
- No error message, ``repr`` or ``str`` of a private key contains key material.
- Ed25519 uses PyNaCl (fast path). ``cryptography`` is imported lazily, only for ECDSA/RSA keys
  and for DER forms that the fixed Ed25519 prefixes do not cover.
- ES256 signatures are raw ``r‖s`` (64 bytes); RSA signatures are PKCS#1 v1.5 over SHA-256.
  RSA keys sign ``RS256`` and verify tokens labelled ``RS256`` or Etcha's ``ES256`` (SPEC 3).
- :meth:`VerifyKey.verify` never raises: garbage or short signatures give ``False``.
"""

from __future__ import annotations

import binascii
import re
import string
from dataclasses import dataclass, field

from agent.core.errors import KeyFormatError
from agent.core.records import Record
from agent.jws.ed25519 import SPKI_PREFIX as _ED25519_SPKI_PREFIX
from agent.jws.ed25519 import Ed25519Signer as _Ed25519Signer
from agent.jws.ed25519 import Ed25519Verifier as _Ed25519Verifier

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Protocol

    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

__all__ = [
    "ALGORITHMS",
    "GENERATE_ALGORITHMS",
    "SigningKey",
    "VerifyKey",
    "generate_keys",
    "parse_signing_key",
    "parse_verify_key",
]

ALGORITHMS: tuple[str, ...] = (
    "ed25519private",
    "ed25519public",
    "ecp256private",
    "ecp256public",
    "rsa2048private",
    "rsa2048public",
)

#: ``generate_keys`` algorithm names (Etcha's, including its aliases).
GENERATE_ALGORITHMS: tuple[str, ...] = (
    "best",
    "ed25519",
    "ecdhx25519",
    "ecp256",
    "ecdhp256",
    "rsa2048",
    "rsa2048oaepsha256",
)

_PRIVATE = ("ed25519private", "ecp256private", "rsa2048private")
_PUBLIC = ("ed25519public", "ecp256public", "rsa2048public")

_ED25519_PKCS8_PREFIX = bytes.fromhex("302e020100300506032b657004220420")
_MIN_RSA_BITS = 2048
_ID_ALPHABET = string.ascii_letters + string.digits

_JWS_ALG = {"ed25519": "EdDSA", "ecp256": "ES256", "rsa2048": "RS256"}
_ACCEPTED_ALGS: dict[str, frozenset[str]] = {
    "ed25519": frozenset({"EdDSA"}),
    "ecp256": frozenset({"ES256"}),
    "rsa2048": frozenset({"RS256", "ES256"}),
}


if TYPE_CHECKING:  # (typing stays off the push path: the protocols exist for mypy only)

    class _Signer(Protocol):
        def sign(self, data: bytes) -> bytes: ...
        def public_der(self) -> bytes: ...

    class _Verifier(Protocol):
        def verify(self, signature: bytes, data: bytes) -> bool: ...


# --- ECDSA P-256 and RSA (cryptography, imported lazily) ---------------------------------------


class _EcSigner:
    __slots__ = ("_key",)

    def __init__(self, key: EllipticCurvePrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        r, s = decode_dss_signature(self._key.sign(data, ec.ECDSA(hashes.SHA256())))
        return r.to_bytes(32, "big") + s.to_bytes(32, "big")

    def public_der(self) -> bytes:
        return _spki(self._key.public_key())


class _EcVerifier:
    __slots__ = ("_key",)

    def __init__(self, key: EllipticCurvePublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import ec
            from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

            der = encode_dss_signature(
                int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
            )
            self._key.verify(der, data, ec.ECDSA(hashes.SHA256()))
        except Exception:  # InvalidSignature, or r/s out of range
            return False
        return True


class _RsaSigner:
    __slots__ = ("_key",)

    def __init__(self, key: RSAPrivateKey) -> None:
        self._key = key

    def sign(self, data: bytes) -> bytes:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        return self._key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def public_der(self) -> bytes:
        return _spki(self._key.public_key())


class _RsaVerifier:
    __slots__ = ("_key",)

    def __init__(self, key: RSAPublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            from cryptography.hazmat.primitives import hashes
            from cryptography.hazmat.primitives.asymmetric import padding

            self._key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
        except Exception:  # InvalidSignature, wrong length, ...
            return False
        return True


def _spki(public_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der: bytes = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return der


def _pkcs8(private_key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der: bytes = private_key.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return der


# --- The public key types ----------------------------------------------------------------------


def _family(algorithm: str) -> str:
    return algorithm.removesuffix("private").removesuffix("public")


def _format(algorithm: str, material: str, kid: str) -> str:
    return f"{algorithm}:{material}:{kid}" if kid else f"{algorithm}:{material}"


class SigningKey:
    """A parsed private key, read-only. Build it with :func:`parse_signing_key`.

    A plain slotted class, compared by identity (a frozen dataclass costs about half a
    millisecond of start-up to build, on every signing path).

    Attributes:
        kid: the key id (``""`` when the string had none).
        algorithm: ``ed25519private``, ``ecp256private`` or ``rsa2048private``.
        jws_alg: the JWS ``alg`` this key signs with: ``EdDSA``, ``ES256`` or ``RS256``.
    """

    __slots__ = ("_impl", "algorithm", "kid")

    kid: str
    algorithm: str
    _impl: _Signer

    def __init__(self, *, kid: str, algorithm: str, _impl: _Signer) -> None:
        object.__setattr__(self, "kid", kid)
        object.__setattr__(self, "algorithm", algorithm)
        object.__setattr__(self, "_impl", _impl)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"SigningKey is read-only: cannot set {name}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"SigningKey is read-only: cannot delete {name}")

    @property
    def jws_alg(self) -> str:
        """The JWS ``alg`` header value for tokens this key signs."""
        return _JWS_ALG[_family(self.algorithm)]

    def sign(self, data: bytes) -> bytes:
        """Sign ``data`` (the JWS signing input) and return the raw JWS signature bytes."""
        return self._impl.sign(data)

    def public(self) -> VerifyKey:
        """The matching verify key, as SPKI DER, with the same id."""
        family = _family(self.algorithm)
        der = self._impl.public_der()
        return parse_verify_key(_format(f"{family}public", _b64encode(der), self.kid))

    def __repr__(self) -> str:
        return f"SigningKey(algorithm={self.algorithm!r}, kid={self.kid!r})"

    def __str__(self) -> str:
        return f"{self.algorithm} key {self.kid!r}" if self.kid else f"{self.algorithm} key"


@dataclass(frozen=True, slots=True, repr=False, eq=False)  # ==, hash: Record's
class VerifyKey(Record):
    """A parsed public key. Build it with :func:`parse_verify_key`.

    Attributes:
        kid: the key id (``""`` when the string had none).
        algorithm: ``ed25519public``, ``ecp256public`` or ``rsa2048public``.
    """

    kid: str
    algorithm: str
    material: str
    _impl: _Verifier = field(compare=False)

    def accepts_alg(self, alg: str) -> bool:
        """Whether a token whose header says ``alg`` can have been signed by this key's type.

        Ed25519 → ``EdDSA``; P-256 → ``ES256``; RSA → ``RS256`` or ``ES256`` (SPEC 3).
        """
        return alg in _ACCEPTED_ALGS[_family(self.algorithm)]

    def verify(self, signature: bytes, data: bytes) -> bool:
        """Check ``signature`` over ``data``. Never raises: bad input gives ``False``."""
        return self._impl.verify(signature, data)

    def __str__(self) -> str:
        """The key string ``<alg>:<base64>[:<id>]`` with the material as it was given."""
        return _format(self.algorithm, self.material, self.kid)

    def __repr__(self) -> str:
        return f"VerifyKey(algorithm={self.algorithm!r}, kid={self.kid!r})"


# --- Parsing -----------------------------------------------------------------------------------


def _split(text: str, what: str) -> tuple[str, str, bytes, str]:
    if not isinstance(text, str):
        raise KeyFormatError(f"{what}: expected a key string, got {type(text).__name__}")
    parts = text.strip().split(":")
    if len(parts) not in (2, 3):
        raise KeyFormatError(
            f"{what}: expected <algorithm>:<base64>[:<id>], got {len(parts)} ':'-separated parts"
        )
    algorithm, material = parts[0], parts[1]
    kid = parts[2] if len(parts) == 3 else ""
    if algorithm not in ALGORITHMS:
        raise KeyFormatError(
            f"{what}: expected an algorithm of {', '.join(ALGORITHMS)}, got an unknown algorithm"
        )
    try:
        raw = _b64decode(material)
    except (binascii.Error, ValueError):
        raise KeyFormatError(
            f"{what} {_label(kid)}: expected standard base64 (+/ with = padding) material "
            f"for {algorithm}, got invalid base64"
        ) from None
    if not raw:
        raise KeyFormatError(f"{what} {_label(kid)}: expected key material, got none")
    return algorithm, material, raw, kid


# binascii, not base64: the same bytes and checks, without importing base64 (and struct) on
# every signing path.
_STANDARD_B64 = re.compile(rb"[A-Za-z0-9+/]*={0,2}").fullmatch


def _b64decode(text: str) -> bytes:
    """``base64.b64decode(text, validate=True)``.

    Raises:
        ValueError: not ASCII, or not standard base64 (``binascii.Error`` is a ValueError).
    """
    data = text.encode("ascii")
    if not _STANDARD_B64(data):
        raise binascii.Error("Non-base64 digit found")
    return binascii.a2b_base64(data)


def _b64encode(data: bytes) -> str:
    """``base64.b64encode(data).decode("ascii")``."""
    return binascii.b2a_base64(data, newline=False).decode("ascii")


def _label(kid: str) -> str:
    """The key id for a message; a long "id" may be misplaced material, so it is not shown."""
    if not kid:
        return "(no id)"
    return repr(kid) if len(kid) <= 32 else "(id not shown)"


def _bad(what: str, kid: str, algorithm: str, expected: str, got: str) -> KeyFormatError:
    return KeyFormatError(f"{what} {_label(kid)}: {algorithm}: expected {expected}, got {got}")


def _load_private_der(raw: bytes) -> Any:
    """Load PKCS#8 / SEC1 / PKCS#1 DER; ``None`` when it is none of them."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_der_private_key(raw, password=None)
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: all mean "not this"
        return None


def _load_public_der(raw: bytes) -> Any:
    """Load SPKI / PKCS#1 DER; ``None`` when it is neither."""
    from cryptography.hazmat.primitives import serialization

    try:
        return serialization.load_der_public_key(raw)
    except Exception:  # ValueError, UnsupportedAlgorithm: all mean "not this"
        return None


def _ed25519_signer(raw: bytes, what: str, kid: str, algorithm: str) -> _Signer:
    expected = "PKCS#8 DER, a 32-byte seed or a 64-byte seed+public key"
    if len(raw) == 48 and raw.startswith(_ED25519_PKCS8_PREFIX):
        return _Ed25519Signer(raw[16:])
    if len(raw) == 32:
        return _Ed25519Signer(raw)
    if len(raw) == 64:
        signer = _Ed25519Signer(raw[:32])
        if signer.public_raw() != raw[32:]:
            raise _bad(what, kid, algorithm, expected, "64 bytes whose public half does not match")
        return signer
    key = _load_private_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are none of these")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if not isinstance(key, Ed25519PrivateKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    return _Ed25519Signer(key.private_bytes_raw())


def _ed25519_verifier(raw: bytes, what: str, kid: str, algorithm: str) -> _Verifier:
    expected = "SPKI DER or 32 raw bytes"
    if len(raw) == 44 and raw.startswith(_ED25519_SPKI_PREFIX):
        return _Ed25519Verifier(raw[12:])
    if len(raw) == 32:
        return _Ed25519Verifier(raw)
    key = _load_public_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are neither")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if not isinstance(key, Ed25519PublicKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    return _Ed25519Verifier(key.public_bytes_raw())


def _ec_signer(raw: bytes, what: str, kid: str, algorithm: str) -> _Signer:
    from cryptography.hazmat.primitives.asymmetric import ec

    expected = "P-256 PKCS#8 DER, SEC1 DER or a 32-byte scalar"
    if len(raw) == 32:
        try:
            return _EcSigner(ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1()))
        except ValueError:
            raise _bad(what, kid, algorithm, expected, "a scalar out of range") from None
    key = _load_private_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are none of these")
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise _bad(what, kid, algorithm, expected, f"curve {key.curve.name}")
    return _EcSigner(key)


def _ec_verifier(raw: bytes, what: str, kid: str, algorithm: str) -> _Verifier:
    from cryptography.hazmat.primitives.asymmetric import ec

    expected = "P-256 SPKI DER or a 65-byte uncompressed point"
    if len(raw) == 65 and raw[0] == 4:
        try:
            return _EcVerifier(ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw))
        except ValueError:
            raise _bad(what, kid, algorithm, expected, "a point not on the curve") from None
    key = _load_public_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are neither")
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    if not isinstance(key.curve, ec.SECP256R1):
        raise _bad(what, kid, algorithm, expected, f"curve {key.curve.name}")
    return _EcVerifier(key)


def _rsa_signer(raw: bytes, what: str, kid: str, algorithm: str) -> _Signer:
    from cryptography.hazmat.primitives.asymmetric import rsa

    expected = f"RSA (>= {_MIN_RSA_BITS} bits) PKCS#8 or PKCS#1 DER"
    key = _load_private_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are neither")
    if not isinstance(key, rsa.RSAPrivateKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    if key.key_size < _MIN_RSA_BITS:
        raise _bad(what, kid, algorithm, expected, f"a {key.key_size}-bit key")
    return _RsaSigner(key)


def _rsa_verifier(raw: bytes, what: str, kid: str, algorithm: str) -> _Verifier:
    from cryptography.hazmat.primitives.asymmetric import rsa

    expected = f"RSA (>= {_MIN_RSA_BITS} bits) SPKI or PKCS#1 DER"
    key = _load_public_der(raw)
    if key is None:
        raise _bad(what, kid, algorithm, expected, f"{len(raw)} bytes that are neither")
    if not isinstance(key, rsa.RSAPublicKey):
        raise _bad(what, kid, algorithm, expected, f"a {type(key).__name__}")
    if key.key_size < _MIN_RSA_BITS:
        raise _bad(what, kid, algorithm, expected, f"a {key.key_size}-bit key")
    return _RsaVerifier(key)


def parse_signing_key(text: str) -> SigningKey:
    """Parse a private key string ``<alg>private:<base64>[:<id>]`` and load its material.

    Args:
        text: the key string (surrounding whitespace is ignored).

    Returns:
        A ready-to-use :class:`SigningKey`.

    Raises:
        KeyFormatError: wrong shape, unknown algorithm, a public key, bad base64 or material
            that is not a key of that algorithm. The message never contains the material.
    """
    what = "signing key"
    algorithm, _material, raw, kid = _split(text, what)
    if algorithm not in _PRIVATE:
        raise KeyFormatError(
            f"{what} {_label(kid)}: expected a private key ({', '.join(_PRIVATE)}), got {algorithm}"
        )
    family = _family(algorithm)
    impl: _Signer
    if family == "ed25519":
        impl = _ed25519_signer(raw, what, kid, algorithm)
    elif family == "ecp256":
        impl = _ec_signer(raw, what, kid, algorithm)
    else:
        impl = _rsa_signer(raw, what, kid, algorithm)
    return SigningKey(kid=kid, algorithm=algorithm, _impl=impl)


def parse_verify_key(text: str) -> VerifyKey:
    """Parse a public key string ``<alg>public:<base64>[:<id>]`` and load its material.

    Args:
        text: the key string (surrounding whitespace is ignored).

    Returns:
        A ready-to-use :class:`VerifyKey`.

    Raises:
        KeyFormatError: wrong shape, unknown algorithm, a private key, bad base64 or material
            that is not a key of that algorithm. The message never contains the material.
    """
    what = "verify key"
    algorithm, material, raw, kid = _split(text, what)
    if algorithm not in _PUBLIC:
        raise KeyFormatError(
            f"{what} {_label(kid)}: expected a public key ({', '.join(_PUBLIC)}), got {algorithm}"
        )
    family = _family(algorithm)
    impl: _Verifier
    if family == "ed25519":
        impl = _ed25519_verifier(raw, what, kid, algorithm)
    elif family == "ecp256":
        impl = _ec_verifier(raw, what, kid, algorithm)
    else:
        impl = _rsa_verifier(raw, what, kid, algorithm)
    return VerifyKey(kid=kid, algorithm=algorithm, material=material, _impl=impl)


# --- Generation --------------------------------------------------------------------------------


def _random_id() -> str:
    import secrets  # stdlib, only to generate keys (off the signing path)

    return "".join(secrets.choice(_ID_ALPHABET) for _ in range(10))


def generate_keys(algorithm: str = "ed25519", kid: str | None = None) -> tuple[str, str]:
    """Generate a key pair as Etcha key strings sharing one id.

    Args:
        algorithm: ``best`` or ``ed25519`` (Ed25519), ``ecp256`` (P-256), ``rsa2048`` (RSA
            2048); Etcha's aliases ``ecdhx25519``, ``ecdhp256``, ``rsa2048oaepsha256`` too.
        kid: the key id; ``None`` or ``""`` gives 10 random characters from ``[A-Za-z0-9]``.

    Returns:
        ``(private, public)``: PKCS#8 DER and SPKI DER, standard base64 with padding.

    Raises:
        KeyFormatError: unknown algorithm, or an id containing ``:`` or whitespace.
    """
    if kid is None or kid == "":
        kid = _random_id()
    elif ":" in kid or kid != kid.strip() or any(c in kid for c in "\r\n"):
        raise KeyFormatError(
            "key id: expected no ':' and no surrounding whitespace, got an id that has them"
        )
    if algorithm in ("best", "ed25519", "ecdhx25519"):
        import secrets  # stdlib, only to generate keys (off the signing path)

        seed = secrets.token_bytes(32)  # what nacl.signing.SigningKey.generate() draws
        private_der = _ED25519_PKCS8_PREFIX + seed
        public_der = _ED25519_SPKI_PREFIX + _Ed25519Signer(seed).public_raw()
        family = "ed25519"
    elif algorithm in ("ecp256", "ecdhp256"):
        from cryptography.hazmat.primitives.asymmetric import ec

        ec_key = ec.generate_private_key(ec.SECP256R1())
        private_der, public_der = _pkcs8(ec_key), _spki(ec_key.public_key())
        family = "ecp256"
    elif algorithm in ("rsa2048", "rsa2048oaepsha256"):
        from cryptography.hazmat.primitives.asymmetric import rsa

        rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_der, public_der = _pkcs8(rsa_key), _spki(rsa_key.public_key())
        family = "rsa2048"
    else:
        raise KeyFormatError(
            f"generate keys: expected an algorithm of {', '.join(GENERATE_ALGORITHMS)}, "
            f"got {algorithm!r}"
        )
    private = _format(f"{family}private", _b64encode(private_der), kid)
    public = _format(f"{family}public", _b64encode(public_der), kid)
    return private, public
