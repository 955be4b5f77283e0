"""Signing: Etcha's claim set and the compact JWS of it (the light half of :mod:`agent.jws.tokens`).

``agent push`` and ``agent build`` only sign; this module keeps them off the decoding and
verification code (:mod:`agent.jws.compact`, :class:`~agent.jws.tokens.VerifiedToken`).
:mod:`agent.jws.tokens` re-exports every name here, so either import works.

Invariants (see :mod:`agent.jws.tokens`): the header is exactly ``{"alg":…,"kid":…,"typ":"JWT"}``
in that order, ``kid`` omitted when the key has no id (extra members and another ``typ`` placed
in sorted key order, as Go marshals a map); the payload is
:func:`agent.core.gojson.dumps_compact` of the claims, so a token is byte-identical to Etcha's
for the same claims, key and (Ed25519) signature.
"""

from __future__ import annotations

import binascii
from collections.abc import Mapping, Sequence

from agent.core.errors import TokenError
from agent.core.gojson import GoJSONError, dumps_compact

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.jws.keys import SigningKey

__all__ = [
    "TYP_DELEGATION",
    "TYP_PATTERN",
    "TYP_REVOCATIONS",
    "b64url",
    "encode_payload",
    "etcha_claims",
    "sign_token",
]

#: ``typ`` of pattern tokens (Etcha's; a pattern token without ``typ`` is accepted too).
TYP_PATTERN = "JWT"
#: ``typ`` of delegation tokens (the links of ``etchaChain``).
TYP_DELEGATION = "etcha-delegation+jwt"
#: ``typ`` of revocation lists.
TYP_REVOCATIONS = "etcha-revocations+jwt"


# --- Encoding ----------------------------------------------------------------------------------


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def b64url(data: bytes) -> str:
    """base64url without padding (``base64.urlsafe_b64encode`` without the ``=``)."""
    # base64.urlsafe_b64encode without importing base64 (and struct) for it
    return binascii.b2a_base64(data, newline=False).rstrip(b"=").translate(_URLSAFE).decode("ascii")


def encode_payload(claims: Mapping[str, Any]) -> str:
    """``B64U(payload JSON)``: the payload part of a token, as given to signing commands.

    Args:
        claims: the claim set.

    Returns:
        base64url (no padding) of the Go-compatible compact JSON.

    Raises:
        TokenError: the claims cannot be serialised.
    """
    try:
        return b64url(dumps_compact(claims))
    except GoJSONError as exc:
        raise TokenError(f"jwt claims: {exc}") from exc


def sign_token(
    claims: Mapping[str, Any],
    key: SigningKey,
    *,
    typ: str = TYP_PATTERN,
    header: Mapping[str, Any] | None = None,
) -> str:
    """Sign ``claims`` with ``key`` into a compact JWS.

    Args:
        claims: the claim set (serialised with :func:`agent.core.gojson.dumps_compact`).
        key: the signing key; its ``jws_alg`` and ``kid`` make the header.
        typ: the header ``typ`` (:data:`TYP_PATTERN`, :data:`TYP_DELEGATION`, ...).
        header: extra protected header members (e.g. ``etchaChain``); ``alg``, ``kid`` and
            ``typ`` cannot be overridden. With none and ``typ`` ``JWT`` the header is exactly
            ``{"alg":…,"kid":…,"typ":"JWT"}`` (byte-identical to Etcha's).

    Returns:
        ``B64U(header).B64U(payload).B64U(signature)``.

    Raises:
        TokenError: the claims or header cannot be serialised.
    """
    members: dict[str, Any] = dict(header or {})
    members.update({"alg": key.jws_alg, "typ": typ})
    if key.kid:
        members["kid"] = key.kid
    else:
        members.pop("kid", None)
    try:
        encoded = b",".join(
            dumps_compact(name) + b":" + dumps_compact(members[name]) for name in sorted(members)
        )
    except GoJSONError as exc:
        raise TokenError(f"jwt header: {exc}") from exc
    signing_input = b64url(b"{" + encoded + b"}") + "." + encode_payload(claims)
    return signing_input + "." + b64url(key.sign(signing_input.encode("ascii")))


def etcha_claims(
    *,
    pattern_entrypoint: str,
    pattern_files: Mapping[str, str] | None,
    build_manifest: str,
    run_vars: Mapping[str, Any],
    version: str,
    audience: Sequence[str] = (),
    expires_in: float = 0,
    issuer: str = "",
    subject: str = "",
    jti: str = "",
    now: float,
) -> dict[str, Any]:
    """Etcha's claim set (reference §2.3), ready for :func:`sign_token`.

    Args:
        pattern_entrypoint: ``etchaPattern.entrypoint``.
        pattern_files: ``etchaPattern.files``; with an empty entrypoint and ``None`` files,
            ``etchaPattern`` is ``null``.
        build_manifest: ``etchaBuildManifest`` (always present).
        run_vars: ``etchaRunVars`` (always present, ``{}`` when empty).
        version: ``etchaVersion`` (omitted when empty).
        audience: ``aud``: omitted when empty, a string for one entry, a list for more.
        expires_in: seconds until ``exp``; 0 omits ``exp``.
        issuer: ``iss`` (omitted when empty).
        subject: ``sub`` (omitted when empty).
        jti: ``jti`` (omitted when empty).
        now: the signing time (unix seconds); ``iat`` and ``nbf`` are ``int(now)``.

    Returns:
        A new dict of claims.
    """
    claims: dict[str, Any] = {
        "etchaBuildManifest": build_manifest,
        "etchaPattern": (
            None
            if not pattern_entrypoint and pattern_files is None
            else {
                "entrypoint": pattern_entrypoint,
                "files": None if pattern_files is None else dict(pattern_files),
            }
        ),
        "etchaRunVars": dict(run_vars),
    }
    if version:
        claims["etchaVersion"] = version
    claims.update(_registered_claims(audience, expires_in, issuer, subject, jti, now))
    return claims


def _registered_claims(
    audience: Sequence[str], expires_in: float, issuer: str, subject: str, jti: str, now: float
) -> dict[str, Any]:
    """``aud exp iat nbf iss jti sub`` as Etcha writes them (empty ones omitted)."""
    claims: dict[str, Any] = {}
    aud = list(audience)
    if len(aud) == 1:
        claims["aud"] = aud[0]
    elif aud:
        claims["aud"] = aud
    if expires_in:
        claims["exp"] = int(now + expires_in)
    claims["iat"] = int(now)
    claims["nbf"] = int(now)
    if issuer:
        claims["iss"] = issuer
    if jti:
        claims["jti"] = jti
    if subject:
        claims["sub"] = subject
    return claims
