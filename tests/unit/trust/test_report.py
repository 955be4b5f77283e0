"""``chain_report`` (:mod:`agent.trust.report`): the delegation chain, link by link, for people.

Real keys and signatures: each link shows its subject key id, sources, actions and ``exp`` and a
verdict (verified, REFUSED with the reason of the first failing link, not checked after it); a
chain refused as a whole (malformed, too deep) says so; the token's ``etchaScope`` is shown.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from agent.config.schema import Config, config_from_dict
from agent.jws.keys import SigningKey, generate_keys, parse_signing_key
from agent.jws.tokens import TYP_DELEGATION, etcha_claims, sign_token
from agent.trust.chain import delegation_claims
from agent.trust.report import chain_report
from agent.trust.revocation import RevocationSet

NOW = time.time()


class Keys:
    def __init__(self, name: str) -> None:
        private, self.pub = generate_keys("ed25519", name)
        self.priv: SigningKey = parse_signing_key(private)


ROOT, TEAM, CI = Keys("root"), Keys("team"), Keys("ci")


def link(
    signer: Keys,
    subject: Keys,
    *,
    sources: Sequence[str] = ("web",),
    actions: Sequence[str] = ("push", "delegate"),
    exp: float = NOW + 3600,
) -> str:
    claims = delegation_claims(
        subject=subject.pub,
        sources=sources,
        actions=actions,
        issuer="x",
        jti="j",
        now=NOW - 60,
        expires_in=0,
    )
    claims.update({"exp": int(exp), "nbf": int(NOW - 60)})
    return sign_token(claims, signer.priv, typ=TYP_DELEGATION)


def token(signer: Keys, chain: Any = None, **extra: Any) -> str:
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files={"main.jsonnet": "{run: []}"},
        build_manifest="",
        run_vars={},
        version="test",
        now=NOW,
    )
    claims.update(extra)
    header = {"etchaChain": chain} if chain is not None else None
    return sign_token(claims, signer.priv, header=header)


def config(**run: Any) -> Config:
    return config_from_dict(
        {"run": {"trustRoots": [ROOT.pub], **run}, "sources": {"web": {"allowPush": True}}}
    )


def report(raw: str, cfg: Config | None = None) -> list[str]:
    return chain_report(raw, cfg or config(), "web", revoked=RevocationSet(), now=NOW)


def test_a_good_two_link_chain_shows_each_link_verified_and_the_effective_scope() -> None:
    lines = report(token(CI, [link(ROOT, TEAM), link(TEAM, CI, actions=["push"])]))
    assert lines[0] == "Delegation chain (2 links, root first):"
    assert lines[1].startswith("  [0] subject team, sources web, actions push,delegate, exp ")
    assert lines[1].endswith(": verified")
    assert lines[2].startswith("  [1] subject ci, sources web, actions push, exp ")
    assert lines[2].endswith(": verified")
    assert lines[3] == "Effective scope (last link): sources web, actions push"
    assert len(lines) == 4
    assert all(ROOT.pub not in line and TEAM.pub not in line for line in lines)


def test_a_widening_link_is_refused_with_its_reason_and_later_links_are_not_checked() -> None:
    chain = [
        link(ROOT, TEAM, actions=["push"]),  # no delegate: the next link widens it
        link(TEAM, CI),
        link(CI, CI),
    ]
    lines = report(token(CI, chain), config(maxChainDepth=3))
    assert lines[1].endswith(": verified")
    assert "REFUSED (chain_widens: etchaChain[1]:" in lines[2]
    assert lines[3].endswith(": not checked")
    assert not any(line.startswith("Effective scope") for line in lines)


def test_an_expired_link_is_refused_as_chain_expired_and_its_exp_shown_in_utc() -> None:
    exp = NOW - 3600
    lines = report(token(CI, [link(ROOT, TEAM, exp=exp)]))
    shown = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(exp)))
    assert f"exp {shown}: REFUSED (chain_expired:" in lines[1]


def test_a_link_signed_by_an_unknown_root_is_refused_at_index_zero() -> None:
    lines = report(token(CI, [link(TEAM, CI)]))
    assert "[0] subject ci" in lines[1]
    assert "REFUSED (chain_untrusted_root:" in lines[1]


def test_links_that_are_not_jwts_are_described_as_such_without_raising() -> None:
    lines = report(token(CI, [12, "not.a.jwt", "x" * 9000]), config(maxChainDepth=3))
    assert lines[1] == (
        "  [0] not a delegation JWT: REFUSED (malformed: etchaChain[0]: "
        + lines[1].split("etchaChain[0]: ", 1)[1]
    )
    assert "[1] does not decode: not checked" in lines[2]
    assert "[2] not a delegation JWT: not checked" in lines[3]


def test_a_chain_that_is_not_a_list_is_refused_as_a_whole() -> None:
    lines = report(token(CI, "nope"))
    assert lines[0] == "Delegation chain (0 links, root first):"
    assert lines[1].startswith("  chain refused (malformed: ")


def test_a_chain_deeper_than_max_chain_depth_shows_depth_plus_one_links() -> None:
    chain = [link(ROOT, TEAM)] * 4
    lines = report(token(CI, chain), config(maxChainDepth=2))
    assert lines[0] == "Delegation chain (4 links, root first):"
    assert [line.split(":")[-1].strip() for line in lines[1:3]] == ["verified", "verified"]
    assert "REFUSED (chain_depth:" in lines[3]
    assert len(lines) == 4  # links beyond maxChainDepth + 1 are not listed


def test_link_claims_of_the_wrong_types_are_shown_as_invalid() -> None:
    claims = delegation_claims(
        subject="not a key",
        sources=["web"],
        actions=["push"],
        issuer="x",
        jti="j",
        now=NOW,
        expires_in=60,
    )
    claims.update({"exp": "soon", "etchaDelegation": {"sources": "web", "actions": []}})
    bad = sign_token(claims, ROOT.priv, typ=TYP_DELEGATION)
    claims.update({"exp": 1e20, "sub": 7})
    huge = sign_token(claims, ROOT.priv, typ=TYP_DELEGATION)
    lines = report(token(CI, [bad, huge]))
    assert "subject (invalid key), sources (invalid), actions (empty), exp (none)" in lines[1]
    assert "[1] subject (none), sources (invalid), actions (empty), exp (invalid)" in lines[2]


def test_a_token_with_a_scope_claim_shows_it_and_one_without_chain_or_scope_shows_nothing() -> None:
    scoped = token(CI, etchaScope={"sources": ["web"], "actions": ["check"]})
    assert report(scoped) == ["Token scope (etchaScope): sources web, actions check"]
    assert report(token(CI)) == []
    assert report("not a token") == []
