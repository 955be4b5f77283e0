"""The publisher's delegation-chain check (pure), with hand-made link JWTs."""

from __future__ import annotations

import base64
import json
from typing import Any

from agent.tools.publish_chain import check_chain

NOW = 1_000_000


def _b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def link(sub: str, exp: int | None) -> str:
    """A delegation link JWT (unsigned content is enough: the publisher only reads its times)."""
    claims: dict[str, Any] = {
        "sub": sub,
        "etchaDelegation": {"sources": ["web"]},
        "iat": NOW - 100,
        "nbf": NOW - 100,
    }
    if exp is not None:
        claims["exp"] = exp
    header = {"alg": "EdDSA", "kid": "root", "typ": "etcha-delegation+jwt"}
    return f"{_b64(header)}.{_b64(claims)}.c2ln"


def test_chain_that_outlives_the_token_and_the_window_passes_silently() -> None:
    found = check_chain(
        [link("team", NOW + 10_000), link("ci", None)],
        token_exp=NOW + 3600,
        resign_before=600,
        now=NOW,
    )
    assert found.warnings == () and found.refusal == ""


def test_link_expiring_within_twice_resign_before_warns() -> None:
    found = check_chain(
        [link("team", NOW + 10_000), link("ci", NOW + 3700)],
        token_exp=NOW + 3600,
        resign_before=2000,
        now=NOW,
    )
    assert found.refusal == ""
    assert found.warnings == (
        "build.delegationChain[1] (subject key ci) expires in 1h1m40s, "
        "within 2 x resignBefore of the token's exp: renew it soon",
    )


def test_link_expiring_before_the_token_is_refused_by_index_and_subject() -> None:
    found = check_chain(
        [link("team", NOW + 1800), link("ci", NOW + 10_000)],
        token_exp=NOW + 3600,
        resign_before=600,
        now=NOW,
    )
    assert found.refusal == (
        "build.delegationChain[0] (subject key team) expires in 30m, before the token, "
        "which expires in 1h: renew the delegation"
    )


def test_token_without_exp_is_refused_under_an_expiring_chain() -> None:
    found = check_chain([link("team", NOW + 1800)], token_exp=None, resign_before=60, now=NOW)
    assert "build.delegationChain[0] (subject key team)" in found.refusal
    assert "which never expires" in found.refusal


def test_undecodable_link_is_refused_by_index() -> None:
    found = check_chain(
        [link("team", None), "not-a-jwt"], token_exp=NOW + 60, resign_before=10, now=NOW
    )
    assert found.refusal.startswith("build.delegationChain[1]: ")
