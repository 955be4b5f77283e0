"""Decoding Etcha's compact JWS: ``B64U(header) "." B64U(payload) "." B64U(signature)``.

The parsing half of :mod:`agent.jws.tokens` (whose docstring states the invariants): strict,
canonical base64url parts, JSON-object header and payload, supported ``alg`` only, and the token
size bound, checked before any decoding. Every error is a ``malformed``
:class:`~agent.core.errors.VerifyError` whose message never contains the token.
"""

from __future__ import annotations

import binascii
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from agent.core.errors import VerifyError, json_kind
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES

_fast_b64decode: Callable[..., bytes] | None
try:  # optional SIMD base64: the stdlib decoder costs more than the Ed25519 check on big tokens
    from pybase64 import b64decode as _fast_b64decode
except ImportError:  # pragma: no cover - exercised where pybase64 is absent
    _fast_b64decode = None

__all__ = [
    "SUPPORTED_ALGS",
    "DecodedToken",
    "TokenParts",
    "b64url_decode",
    "check_alg",
    "decode_token",
    "json_object",
    "malformed",
    "split_token",
]

SUPPORTED_ALGS = frozenset({"EdDSA", "ES256", "RS256"})

_URL_TO_STD = bytes.maketrans(b"-_", b"+/")
_B64URL_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
#: Mask of the unused low bits of the last character, by ``len(part) % 4`` (0 and 1 have none).
_UNUSED_BITS = {2: 0x0F, 3: 0x03}


def malformed(message: str) -> VerifyError:
    """A ``malformed`` verification error."""
    return VerifyError(f"malformed token: {message}", "malformed")


def _check_canonical_tail(part: bytes, name: str) -> None:
    """Refuse a base64url part whose last character has non-zero unused bits."""
    unused = _UNUSED_BITS.get(len(part) % 4)
    if unused is None:
        return
    value = _B64URL_ALPHABET.find(part[-1:])
    if value >= 0 and value & unused:
        raise malformed(
            f"{name}: expected canonical base64url (unused trailing bits zero), got non-zero bits"
        )


def b64url_decode(part: bytes, name: str) -> bytes:
    """Strict, canonical base64url without padding (Go's RawURLEncoding with Strict()).

    A last character with non-zero unused bits is refused: Go's default decoder ignores those
    bits, so ``...Q`` and ``...R`` would decode to the same signature.

    Uses pybase64 (SIMD) when it is installed, else :mod:`binascii`; both validate the alphabet.
    """
    if b"=" in part or b"+" in part or b"/" in part or len(part) % 4 == 1:
        raise malformed(f"{name}: expected base64url without padding, got other characters")
    _check_canonical_tail(part, name)
    padded = part + b"=" * (-len(part) % 4)
    try:
        if _fast_b64decode is not None:
            return _fast_b64decode(padded, altchars=b"-_", validate=True)
        return binascii.a2b_base64(padded.translate(_URL_TO_STD), strict_mode=True)
    except (binascii.Error, ValueError):
        raise malformed(f"{name}: expected base64url without padding, got invalid data") from None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError("number out of range")
    return value


def json_object(data: bytes, name: str) -> dict[str, Any]:
    """Parse JSON that must be an object (no NaN/Infinity, finite numbers only)."""
    try:
        value = json.loads(data, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError):
        raise malformed(f"{name}: expected a JSON object, got invalid JSON") from None
    if not isinstance(value, dict):
        raise malformed(f"{name}: expected a JSON object, got {json_kind(value)}")
    return value


@dataclass(frozen=True, slots=True)
class TokenParts:
    """A token split into its parts, the header decoded (the payload is not)."""

    raw: str
    header: dict[str, Any]
    alg: str
    signing_input: bytes
    payload_b64: bytes
    signature_b64: bytes


def split_token(token: str, max_bytes: int) -> TokenParts:
    """Split and bound a token and decode its header."""
    if not isinstance(token, str):
        raise malformed(f"expected a string, got {type(token).__name__}")
    if len(token) > max_bytes:
        raise malformed(f"expected at most {max_bytes} bytes, got {len(token)}")
    token = token.strip("\r\n")
    try:
        data = token.encode("ascii")
    except UnicodeEncodeError:
        raise malformed("expected base64url text, got non-ASCII characters") from None
    first = data.find(b".")
    second = data.find(b".", first + 1) if first >= 0 else -1
    if second < 0 or data.find(b".", second + 1) >= 0:
        raise malformed(f"expected 3 '.'-separated parts, got {data.count(b'.') + 1}")
    header_b64 = data[:first]
    payload_b64 = data[first + 1 : second]
    signature_b64 = data[second + 1 :]
    if not header_b64 or not payload_b64:
        raise malformed("expected a header and a payload, got an empty part")
    header = json_object(b64url_decode(header_b64, "header"), "header")
    alg = header.get("alg")
    if not isinstance(alg, str):
        raise malformed(f"header alg: expected a string, got {json_kind(alg)}")
    return TokenParts(
        raw=token,
        header=header,
        alg=alg,
        signing_input=data[:second],
        payload_b64=payload_b64,
        signature_b64=signature_b64,
    )


def check_alg(alg: str) -> None:
    """Refuse ``none``, HMAC and unknown algs."""
    if alg in SUPPORTED_ALGS:
        return
    if alg.lower() == "none":
        raise malformed("header alg: unsigned tokens (alg none) are not accepted")
    if alg.upper().startswith("HS"):
        raise malformed(f"header alg: HMAC tokens ({alg[:16]}) are not accepted")
    raise malformed(f"header alg: expected one of EdDSA, ES256, RS256, got {alg[:16]!r}")


@dataclass(frozen=True, slots=True)
class DecodedToken:
    """A token's header and claims, NOT verified: for display only.

    Attributes:
        raw: the token as given (CR/LF trimmed).
        header: the header object.
        claims: the payload object, keys in the order they appear in the token.
    """

    raw: str
    header: Mapping[str, Any]
    claims: Mapping[str, Any]


def decode_token(token: str, *, max_bytes: int = DEFAULT_MAX_TOKEN_BYTES) -> DecodedToken:
    """Decode a token's header and claims without verifying anything.

    Args:
        token: a compact JWS (a trailing newline is tolerated).
        max_bytes: longest accepted token.

    Returns:
        The decoded header and claims.

    Raises:
        TokenError: (a :class:`~agent.core.errors.VerifyError` with reason ``malformed``) the token
        is
            not three base64url parts whose header and payload are JSON objects.
    """
    parts = split_token(token, max_bytes)
    claims = json_object(b64url_decode(parts.payload_b64, "payload"), "payload")
    return DecodedToken(
        raw=token.strip("\r\n"),
        header=MappingProxyType(parts.header),
        claims=MappingProxyType(claims),
    )
