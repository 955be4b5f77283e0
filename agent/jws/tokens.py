"""JWT encoding, signing, decoding and verification (Etcha's compact JWS layout).

``token = B64U(header) "." B64U(payload) "." B64U(signature)``, base64url without padding.

Invariants:

- Signing: the header is exactly ``{"alg":…,"kid":…,"typ":"JWT"}`` in that order, ``kid`` omitted
  when the key has no id (extra header members, such as ``etchaChain``, and another ``typ`` are
  placed in sorted key order, as Go marshals a map); the payload is
  :func:`agent.core.gojson.dumps_compact` of the claims, so a token is byte-identical to
  Etcha's for the same claims, key and (Ed25519) signature.
- Verification never raises anything but :class:`~agent.core.errors.VerifyError` (``reason`` one of
  ``no_keys``, ``no_match``, ``expired``, ``not_yet_valid``, ``malformed``); decoding never raises
  anything but :class:`~agent.core.errors.TokenError`. Messages never contain the token.
- Every part is canonical base64url: a last character whose unused low bits are not zero is
  ``malformed`` (Go's decoder accepts such tails, so one signature would have several spellings).
  ECDSA high-S signatures are accepted (Go's signer does not normalise ``s``), so a token string
  is still malleable: nothing may key on the raw string. Use ``jti``, the claims, or
  :func:`token_identity` (a hash of header and payload only).
- Tokens longer than ``max_bytes`` (default :data:`DEFAULT_MAX_TOKEN_BYTES`, the one default for
  pull, push and verify) are ``malformed`` before any decoding.
- ``alg`` must be ``EdDSA``, ``ES256`` or ``RS256``: ``none``, HMAC and unknown algs are malformed.
  Keys are tried in order; keys whose type cannot produce the header ``alg`` are skipped (so an
  HMAC/alg-confusion token never reaches a public key). ``kid`` is not used to pick a key.
- The payload JSON of a token is parsed only after its signature verified.
- Explicit types (RFC 8725 §3.11): each verifier accepts only its own ``typ``
  (:data:`TYP_PATTERN`, absent too, for patterns; :data:`TYP_DELEGATION`;
  :data:`TYP_REVOCATIONS`); any other is ``wrong_type``, checked before the signature.
- exp/nbf are checked with :data:`LEEWAY_SECONDS` leeway; claim types are checked.
- :class:`VerifiedToken` can only be constructed by :func:`verify_token` and
  :func:`accept_command_token`.
- The hot path is base64 (C) + ``json.loads`` + PyNaCl: no PyJWT, no per-character Python loops.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.core.errors import VerifyError, json_kind
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES
from agent.jws.compact import (
    SUPPORTED_ALGS,
    DecodedToken,
    TokenParts,
    b64url_decode,
    check_alg,
    decode_token,
    json_object,
    malformed,
    split_token,
)
from agent.jws.sign import (
    TYP_DELEGATION,
    TYP_PATTERN,
    TYP_REVOCATIONS,
    encode_payload,
    etcha_claims,
    sign_token,
)

if TYPE_CHECKING:
    from agent.jws.keys import VerifyKey

__all__ = [
    "DEFAULT_MAX_TOKEN_BYTES",
    "LEEWAY_SECONDS",
    "SUPPORTED_ALGS",
    "TYP_DELEGATION",
    "TYP_PATTERN",
    "TYP_REVOCATIONS",
    "DecodedToken",
    "VerifiedToken",
    "accept_command_token",
    "check_typ",
    "decode_token",
    "encode_payload",
    "etcha_claims",
    "sign_token",
    "token_identity",
    "verify_token",
    "verify_token_with",
]

LEEWAY_SECONDS = 30

_ORIGIN = object()  # the private constructor token of VerifiedToken


# --- Verification ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature (or verify commands) and time claims were accepted.

    Only :func:`verify_token` and :func:`accept_command_token` can construct one; the pattern
    renderer accepts nothing else.

    Attributes:
        raw: the token (CR/LF trimmed).
        header: the header object.
        claims: every claim, as decoded.
        key_id: the configured id of the verify key that matched (``""`` for verify commands).
        pattern_entrypoint: ``etchaPattern.entrypoint`` (``""`` when absent).
        pattern_files: ``etchaPattern.files``, or ``None``.
        run_vars: ``etchaRunVars``, else the old ``etchaRunEnv``, else ``{}``.
        build_manifest: ``etchaBuildManifest``.
        version: ``etchaVersion``.
        iat: issued-at (unix seconds), exp: expiry, nbf: not-before; ``None`` when absent.
        jti, iss, sub: the registered string claims (``""`` when absent).
        aud: the audience as a tuple.
    """

    raw: str = field(repr=False)
    header: Mapping[str, Any]
    claims: Mapping[str, Any] = field(repr=False)
    key_id: str
    pattern_entrypoint: str
    pattern_files: Mapping[str, str] | None = field(repr=False)
    run_vars: Mapping[str, Any] = field(repr=False)
    build_manifest: str
    version: str
    iat: int | None
    exp: int | None
    nbf: int | None
    jti: str
    aud: tuple[str, ...]
    iss: str
    sub: str
    _origin: object = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self._origin is not _ORIGIN:
            raise TypeError(
                "VerifiedToken is built only by agent.jws.tokens.verify_token or "
                "accept_command_token"
            )


def _utc(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, ValueError, OSError):
        return f"unix time {ts:g}"


def _string_claim(claims: Mapping[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise malformed(f"claim {name}: expected a string, got {json_kind(value)}")
    return value


def _time_claim(claims: Mapping[str, Any], name: str) -> float | None:
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise malformed(f"claim {name}: expected a number, got {json_kind(value)}")
    return value


def _as_int(value: float | None) -> int | None:
    return None if value is None else int(value)


def _pattern(claims: Mapping[str, Any]) -> tuple[str, Mapping[str, str] | None]:
    value = claims.get("etchaPattern")
    if value is None:
        return "", None
    if not isinstance(value, dict):
        raise malformed(f"claim etchaPattern: expected an object, got {json_kind(value)}")
    entrypoint = value.get("entrypoint", "")
    if entrypoint is None:
        entrypoint = ""
    if not isinstance(entrypoint, str):
        raise malformed(
            f"claim etchaPattern.entrypoint: expected a string, got {json_kind(entrypoint)}"
        )
    files = value.get("files")
    if files is None:
        return entrypoint, None
    if not isinstance(files, dict):
        raise malformed(f"claim etchaPattern.files: expected an object, got {json_kind(files)}")
    for content in files.values():
        if not isinstance(content, str):
            raise malformed(
                f"claim etchaPattern.files: expected string file contents, got {json_kind(content)}"
            )
    return entrypoint, MappingProxyType(files)


def _run_vars(claims: Mapping[str, Any]) -> Mapping[str, Any]:
    name = "etchaRunVars"
    value = claims.get(name)
    if value is None:
        name = "etchaRunEnv"
        value = claims.get(name)
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, dict):
        raise malformed(f"claim {name}: expected an object, got {json_kind(value)}")
    return MappingProxyType(value)


def _audience(claims: Mapping[str, Any]) -> tuple[str, ...]:
    value = claims.get("aud")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return tuple(value)
    raise malformed(f"claim aud: expected a string or a list of strings, got {json_kind(value)}")


def _accept(
    parts: TokenParts,
    claims: dict[str, Any],
    *,
    key_id: str,
    now: float | None,
    check_times: bool = True,
) -> VerifiedToken:
    """Type-check the claims, check exp/nbf (unless ``check_times`` is off), build the token."""
    exp = _time_claim(claims, "exp")
    nbf = _time_claim(claims, "nbf")
    iat = _time_claim(claims, "iat")
    entrypoint, files = _pattern(claims)
    run_vars = _run_vars(claims)
    token = VerifiedToken(
        raw=parts.raw,
        header=MappingProxyType(parts.header),
        claims=MappingProxyType(claims),
        key_id=key_id,
        pattern_entrypoint=entrypoint,
        pattern_files=files,
        run_vars=run_vars,
        build_manifest=_string_claim(claims, "etchaBuildManifest"),
        version=_string_claim(claims, "etchaVersion"),
        iat=_as_int(iat),
        exp=_as_int(exp),
        nbf=_as_int(nbf),
        jti=_string_claim(claims, "jti"),
        aud=_audience(claims),
        iss=_string_claim(claims, "iss"),
        sub=_string_claim(claims, "sub"),
        _origin=_ORIGIN,
    )
    if not check_times:
        return token
    current = _now() if now is None else now
    if exp and current - LEEWAY_SECONDS > exp:
        raise VerifyError(
            f"token expired at {_utc(exp)} (now {_utc(current)}, leeway {LEEWAY_SECONDS}s)",
            "expired",
        )
    if nbf is not None and nbf > current + LEEWAY_SECONDS:
        raise VerifyError(
            f"token not valid before {_utc(nbf)} (now {_utc(current)}, leeway {LEEWAY_SECONDS}s)",
            "not_yet_valid",
        )
    return token


def _now() -> float:
    return time.time()


def check_typ(header: Mapping[str, Any], typ: str) -> None:
    """Refuse a token whose header ``typ`` is not ``typ`` (case-insensitive, RFC 7515 4.1.9).

    A pattern token (:data:`TYP_PATTERN`) may have no ``typ`` (Etcha's older tokens).

    Raises:
        VerifyError: ``wrong_type``.
    """
    got = header.get("typ")
    if got is None and typ == TYP_PATTERN:
        return
    if isinstance(got, str) and got.lower() == typ.lower():
        return
    shown = repr(got[:40]) if isinstance(got, str) else json_kind(got)
    raise VerifyError(
        f"wrong token type: expected typ {typ!r} ({_TYP_NAMES.get(typ, typ)}), got {shown}",
        "wrong_type",
    )


_TYP_NAMES = {
    TYP_PATTERN: "a pattern token",
    TYP_DELEGATION: "a delegation",
    TYP_REVOCATIONS: "a revocation list",
}


def verify_token(
    token: str,
    keys: Sequence[VerifyKey],
    *,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    check_times: bool = True,
    typ: str = TYP_PATTERN,
) -> VerifiedToken:
    """Verify ``token`` against ``keys`` (tried in order) and check its time claims.

    Args:
        token: a compact JWS (a trailing CR/LF is tolerated).
        keys: verify keys; keys whose type cannot produce the header ``alg`` are skipped.
        now: the current unix time (default: the clock).
        check_times: check ``exp``/``nbf``. Off only to re-admit a token a source already
            accepted (SPEC 31: the time claims guard delivery, not storage).
        max_bytes: longest accepted token (``run.maxTokenBytes``).
        typ: the only header ``typ`` accepted (default: a pattern token).

    Returns:
        The verified token; ``key_id`` is the matching key's configured id.

    Raises:
        VerifyError: ``malformed`` (shape, base64, JSON, alg none/HMAC/unknown, claim types,
            size), ``wrong_type`` (another ``typ``), ``no_keys`` (empty ``keys``), ``no_match``
            (no key verified the signature), ``expired`` or ``not_yet_valid`` (outside exp/nbf
            with 30 s leeway).
    """
    return verify_token_with(
        token, keys, now=now, max_bytes=max_bytes, check_times=check_times, typ=typ
    )[0]


def verify_token_with(
    token: str,
    keys: Sequence[VerifyKey],
    *,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    check_times: bool = True,
    typ: str = TYP_PATTERN,
) -> tuple[VerifiedToken, VerifyKey]:
    """:func:`verify_token`, also returning the key (one of ``keys``) that verified it."""
    parts = split_token(token, max_bytes)
    check_alg(parts.alg)
    check_typ(parts.header, typ)
    if not keys:
        raise VerifyError("cannot verify JWT without verify keys: none are configured", "no_keys")
    payload = b64url_decode(parts.payload_b64, "payload")  # JSON is parsed once verified
    signature = b64url_decode(parts.signature_b64, "signature")
    matched = None
    for key in keys:
        if key.accepts_alg(parts.alg) and key.verify(signature, parts.signing_input):
            matched = key
            break
    if matched is None:
        kid = parts.header.get("kid")
        named = f" (token kid {kid[:32]!r})" if isinstance(kid, str) and kid else ""
        raise VerifyError(
            f"no verify key matched the {parts.alg} signature{named}: "
            f"tried {sum(1 for k in keys if k.accepts_alg(parts.alg))} of {len(keys)} keys",
            "no_match",
        )
    claims = json_object(payload, "payload")
    verified = _accept(parts, claims, key_id=matched.kid, now=now, check_times=check_times)
    return verified, matched


def accept_command_token(
    token: str,
    *,
    now: float | None = None,
    max_bytes: int = DEFAULT_MAX_TOKEN_BYTES,
    check_times: bool = True,
) -> VerifiedToken:
    """Accept a token that verify commands vouched for: decode and check claims, no signature.

    Args:
        token: the token printed by the verify command (``etcha:jwt``).
        now: the current unix time (default: the clock).
        check_times: check ``exp``/``nbf`` (see :func:`verify_token`).
        max_bytes: longest accepted token (``run.maxTokenBytes``).

    Returns:
        The token, with ``key_id`` ``""``.

    Raises:
        VerifyError: ``malformed``, ``wrong_type``, ``expired`` or ``not_yet_valid``.
    """
    parts = split_token(token, max_bytes)
    check_typ(parts.header, TYP_PATTERN)
    claims = json_object(b64url_decode(parts.payload_b64, "payload"), "payload")
    return _accept(parts, claims, key_id="", now=now, check_times=check_times)


def token_identity(token: str) -> str:
    """A stable identity for a token: SHA-256 (hex) of ``header.payload``, signature excluded.

    Signatures are malleable (an ECDSA ``s`` and ``n - s`` both verify), so two different raw
    strings can carry the same signed content; key caches and comparisons on this, on ``jti`` or
    on the claims, never on the raw token string.

    Args:
        token: a compact JWS (surrounding CR/LF is ignored); it is not decoded or verified.

    Returns:
        64 lowercase hex characters.
    """
    text = token.strip("\r\n")
    signing_input, _, _ = text.rpartition(".")
    return hashlib.sha256((signing_input or text).encode("utf-8", "surrogatepass")).hexdigest()
