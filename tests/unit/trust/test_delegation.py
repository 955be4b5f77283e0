"""Delegation chains, scopes, check-only keys, typed tokens, revocations and jwtRule in the gate.

Real keys, real signatures, the real gate; each refusal is checked by its reason code and by the
count the gate reports (``agent_verify_failures_total{source,reason}``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from agent.config.fields import ACTION_NAMES
from agent.config.schema import Config, config_from_dict
from agent.core.errors import VerifyError
from agent.jws.keys import SigningKey, generate_keys, parse_signing_key
from agent.jws.tokens import (
    TYP_DELEGATION,
    TYP_REVOCATIONS,
    decode_token,
    etcha_claims,
    sign_token,
)
from agent.tools.build import sign_claims
from agent.trust.chain import delegation_claims
from agent.trust.gate import Action, Context, TrustGate
from agent.trust.revocation import RevocationSet, Revoked, parse_revocation_list, revocation_claims

NOW = time.time()


class Keys:
    """A fresh key pair: ``priv`` (SigningKey), ``pub`` (public key string)."""

    def __init__(self, name: str) -> None:
        private, self.pub = generate_keys("ed25519", name)
        self.priv: SigningKey = parse_signing_key(private)
        self.kid = name


ROOT, TEAM, CI, OTHER = Keys("root"), Keys("team"), Keys("ci"), Keys("other")


def link(
    signer: Keys,
    subject: Keys,
    *,
    sources: Sequence[str] = ("web",),
    actions: Sequence[str] = ("push", "pull", "delegate"),
    exp: float = NOW + 3600,
    nbf: float = NOW - 60,
    change: dict[str, Any] | None = None,
    typ: str = TYP_DELEGATION,
) -> str:
    claims = delegation_claims(
        subject=subject.pub,
        sources=sources,
        actions=actions,
        issuer=signer.kid,
        jti="j",
        now=NOW - 60,
        expires_in=0,
    )
    claims.update({"exp": int(exp), "nbf": int(nbf)})
    claims.update(change or {})
    return sign_token(claims, signer.priv, typ=typ)


def pattern(
    signer: Keys, chain: Sequence[Any] | None = None, *, iat: float = NOW, **extra: Any
) -> str:
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files={"main.jsonnet": "{run: []}"},
        build_manifest="",
        run_vars={},
        version="test",
        now=iat,
    )
    claims.update(extra)
    header = {"etchaChain": list(chain)} if chain is not None else None
    return sign_token(claims, signer.priv, header=header)


def config(run: dict[str, Any] | None = None, **source: Any) -> Config:
    base: dict[str, Any] = {"trustRoots": [ROOT.pub], **(run or {})}
    return config_from_dict(
        {"run": base, "sources": {"web": {"allowPush": True, **source}, "db": {}}}
    )


class Counter:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def verify_failure(self, source: str, reason: str) -> None:
        self.seen.append((source, reason))


def admit(
    cfg: Config,
    raw: str,
    *,
    source: str = "web",
    context: Context = Context.PUSH,
    action: Action | None = None,
    gate: TrustGate | None = None,
) -> Any:
    gate = gate or TrustGate(cfg)
    return asyncio.run(gate.admit(raw, source, context, action=action))


def refusal(cfg: Config, raw: str, **kwargs: Any) -> str:
    counter = Counter()
    gate = TrustGate(cfg, metrics=counter)
    with pytest.raises(VerifyError) as info:
        admit(cfg, raw, gate=gate, **kwargs)
    assert counter.seen == [(kwargs.get("source", "web"), info.value.reason)]
    return info.value.reason


def two_level(**second: Any) -> list[str]:
    return [link(ROOT, TEAM), link(TEAM, CI, **second)]


# ---------------------------------------------------------------------------- acceptance


def test_two_level_chain_is_admitted_for_push_and_pull_with_its_key_ids() -> None:
    cfg = config()
    raw = pattern(CI, two_level())
    pushed = admit(cfg, raw)
    assert pushed.key_id == "ci" and pushed.chain_key_ids == ("root", "team", "ci")
    pulled = admit(cfg, raw, context=Context.PULL)
    assert pulled.action is Action.PULL


def test_a_root_key_alone_does_not_verify_patterns() -> None:
    assert refusal(config({"verifyKeys": [OTHER.pub]}), pattern(ROOT)) == "no_match"


# ---------------------------------------------------------------------------- chain refusals


@pytest.mark.parametrize(
    ("second", "reason"),
    [
        ({"sources": ("web", "db")}, "chain_widens"),
        ({"actions": ("push", "pull", "shell")}, "chain_widens"),
        ({"sources": ("*",)}, "chain_widens"),
        ({"exp": NOW + 7200}, "chain_widens"),
        ({"exp": NOW - 3600}, "chain_expired"),
        ({"nbf": NOW + 3600}, "chain_expired"),
    ],
    ids=["sources", "actions", "all-sources", "exp", "expired", "not-yet-valid"],
)
def test_second_link_that_widens_or_is_out_of_time_is_refused(
    second: dict[str, Any], reason: str
) -> None:
    assert refusal(config(), pattern(CI, two_level(**second))) == reason


def test_first_link_that_widens_is_refused_at_the_second() -> None:
    chain = [link(ROOT, TEAM, actions=("push", "delegate")), link(TEAM, CI, actions=("pull",))]
    assert refusal(config(), pattern(CI, chain)) == "chain_widens"


def test_second_link_without_delegate_in_its_parent_is_refused() -> None:
    chain = [link(ROOT, TEAM, actions=("push",)), link(TEAM, CI, actions=("push",))]
    assert refusal(config(), pattern(CI, chain)) == "chain_widens"


def test_expired_middle_link_is_refused() -> None:
    chain = [
        link(ROOT, TEAM),
        link(TEAM, OTHER, exp=NOW - 600),
        link(OTHER, CI, exp=NOW - 700),
    ]
    assert refusal(config(), pattern(CI, chain)) == "chain_expired"


def test_chain_longer_than_max_chain_depth_is_refused() -> None:
    chain = [link(ROOT, TEAM), link(TEAM, OTHER), link(OTHER, CI)]
    assert admit(config(), pattern(CI, chain)).key_id == "ci"  # 3 links: the default bound
    assert refusal(config({"maxChainDepth": 2}), pattern(CI, chain)) == "chain_depth"


def test_chain_from_an_unknown_root_is_refused() -> None:
    assert refusal(config(), pattern(CI, [link(OTHER, CI)])) == "chain_untrusted_root"


def test_link_or_pattern_signed_by_the_wrong_key_is_refused() -> None:
    assert refusal(config(), pattern(CI, [link(ROOT, TEAM), link(OTHER, CI)])) == (
        "chain_bad_signature"
    )
    assert refusal(config(), pattern(OTHER, two_level())) == "chain_bad_signature"


@pytest.mark.parametrize(
    "change",
    [
        {"etchaDelegation": {"sources": ["web"], "actions": ["push"], "extra": 1}},
        {"etchaDelegation": {"sources": ["web", "web"], "actions": ["push"]}},
        {"etchaDelegation": {"sources": [], "actions": ["push"]}},
        {"etchaDelegation": {"sources": ["web"], "actions": ["fly"]}},
        {"etchaDelegation": {"sources": ["web"]}},
        {"exp": None},
        {"nbf": None},
        {"sub": "not a key"},
    ],
    ids=[
        "unknown-key",
        "duplicate",
        "empty",
        "unknown-action",
        "missing",
        "no-exp",
        "no-nbf",
        "sub",
    ],
)
def test_invalid_delegation_claims_are_refused_as_scope_invalid(change: dict[str, Any]) -> None:
    assert refusal(config(), pattern(CI, [link(ROOT, CI, change=change)])) == "scope_invalid"


def test_delegation_pushed_as_a_pattern_and_pattern_as_a_link_are_wrong_type() -> None:
    # The same key is a trust root and a verify key: only the typ tells the two apart.
    cfg = config({"verifyKeys": [ROOT.pub]})
    assert refusal(cfg, link(ROOT, CI)) == "wrong_type"
    as_link = pattern(ROOT)
    assert refusal(cfg, pattern(CI, [as_link])) == "wrong_type"
    assert refusal(cfg, pattern(CI, [link(ROOT, CI, typ="JWT")])) == "wrong_type"


@pytest.mark.parametrize("value", [[], "x", [1], {"a": 1}, ["a.b.c"], ["x" * 9000]], ids=str)
def test_malformed_chain_header_is_refused(value: Any) -> None:
    assert refusal(config(), pattern(CI, value)) in ("malformed", "chain_depth")


# ---------------------------------------------------------------------------- scopes


def test_chain_scope_limits_source_and_action() -> None:
    raw = pattern(CI, two_level())
    assert refusal(config(), raw, source="db") == "scope_source"
    assert refusal(config(), raw, context=Context.SHELL) == "scope_action"


def test_check_only_key_admits_check_mode_push_and_refuses_a_real_push() -> None:
    cfg = config({"verifyKeys": [{"key": CI.pub, "actions": ["check"]}]})
    raw = pattern(CI)
    assert admit(cfg, raw, action=Action.CHECK).action is Action.CHECK
    assert refusal(cfg, raw) == "scope_action"
    assert refusal(cfg, raw, context=Context.PULL) == "scope_action"


def test_push_grant_also_admits_a_check_mode_push() -> None:
    cfg = config({"verifyKeys": [{"key": CI.pub, "actions": ["push"], "sources": ["web"]}]})
    assert admit(cfg, pattern(CI), action=Action.CHECK).action is Action.CHECK
    assert refusal(cfg, pattern(CI), source="db", context=Context.PULL) == "scope_source"


def test_etcha_scope_narrows_a_token_and_is_parsed_strictly() -> None:
    cfg = config({"verifyKeys": [CI.pub]})
    raw = pattern(CI, etchaScope={"sources": ["web"], "actions": ["pull"]})
    assert admit(cfg, raw, context=Context.PULL).source == "web"
    assert refusal(cfg, raw) == "scope_action"
    assert refusal(cfg, raw, source="db", context=Context.PULL) == "scope_source"
    bad = pattern(CI, etchaScope={"sources": ["web"], "actions": []})
    assert refusal(cfg, bad) == "scope_invalid"


def test_restore_and_run_recheck_the_action_first_admitted() -> None:
    cfg = config({"verifyKeys": [{"key": CI.pub, "actions": ["pull"]}]})
    raw = pattern(CI)
    assert admit(cfg, raw, context=Context.RUN, action=Action.PULL).action is Action.PULL
    assert refusal(cfg, raw, context=Context.RESTORE, action=Action.PUSH) == "scope_action"


def test_action_names_in_config_are_the_gate_actions() -> None:
    assert set(ACTION_NAMES) == {a.value for a in Action}


# ---------------------------------------------------------------------------- revocation


def test_config_revocation_refuses_tokens_issued_before_and_admits_later_ones() -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    cfg = config({"verifyKeys": [CI.pub], "revocations": [{"key": "ci", "before": before}]})
    assert refusal(cfg, pattern(CI, iat=NOW - 10)) == "revoked"
    assert admit(cfg, pattern(CI, iat=NOW + 10)).key_id == "ci"
    by_key = config({"revocations": [{"key": TEAM.pub, "before": before}]})
    assert refusal(by_key, pattern(CI, two_level())) == "revoked"  # team signed link 1


def test_revoked_delegated_key_cannot_sign_new_patterns_under_its_old_delegation() -> None:
    before = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW))
    cfg = config({"revocations": [{"key": "ci", "before": before}]})
    assert refusal(cfg, pattern(CI, two_level(), iat=NOW + 60)) == "revoked"


def test_pulled_revocations_reach_the_gate() -> None:
    cfg = config()
    gate = TrustGate(cfg)
    raw = pattern(CI, two_level())
    admit(cfg, raw, gate=gate)
    gate.set_pulled_revocations([Revoked("root", NOW + 1)])
    with pytest.raises(VerifyError) as info:
        admit(cfg, raw, gate=gate, context=Context.RUN, action=Action.PUSH)
    assert info.value.reason == "revoked"


def test_revocation_list_is_typed_signed_by_a_root_and_needs_iat() -> None:
    cfg = config()
    claims = revocation_claims([Revoked("ci", NOW)], now=NOW)
    good = sign_token(claims, ROOT.priv, typ=TYP_REVOCATIONS)
    parsed = parse_revocation_list(good, cfg, revoked=RevocationSet())
    assert parsed.iat == int(NOW) and parsed.entries == (Revoked("ci", float(int(NOW))),)
    for raw, reason in [
        (sign_token(claims, ROOT.priv), "wrong_type"),
        (sign_token(claims, OTHER.priv, typ=TYP_REVOCATIONS), "no_match"),
        (sign_token({"etchaRevocations": []}, ROOT.priv, typ=TYP_REVOCATIONS), "malformed"),
    ]:
        with pytest.raises(VerifyError) as info:
            parse_revocation_list(raw, cfg, revoked=RevocationSet())
        assert info.value.reason == reason


# ---------------------------------------------------------------------------- jwtRule


@pytest.mark.parametrize(
    ("rule", "admitted"),
    [
        ('claims.etchaVersion == "test" && header.typ == "JWT"', True),
        ('claims.etchaVersion == "prod"', False),
        ("claims.nope == 1", False),  # an evaluation error
        ("1", False),  # not a boolean
    ],
    ids=["true", "false", "error", "not-bool"],
)
def test_jwt_rule_admits_only_a_boolean_true(rule: str, admitted: bool) -> None:
    cfg = config({"verifyKeys": [CI.pub]}, jwtRule=rule)
    if admitted:
        assert admit(cfg, pattern(CI)).key_id == "ci"
    else:
        assert refusal(cfg, pattern(CI)) == "jwt_rule"


# ---------------------------------------------------------------------------- building


def test_tokens_without_a_chain_are_byte_identical_to_etchas(interop: dict[str, Any]) -> None:
    data = interop  # tests/data/interop_vectors.json, the repo's copy of Etcha's vectors
    vector = data["byteExact"]["V1"]
    pair = next(p for p in data["keyPairs"] if p["id"] == vector["privateKeyId"])
    cfg = config_from_dict({"build": {"signingKey": pair["privateKey"]}})
    assert asyncio.run(sign_claims(vector["claims"], config=cfg)) == vector["token"]


def test_build_puts_the_chain_in_the_signed_header_and_scope_in_the_claims(
    tmp_path: Path,
) -> None:
    first = tmp_path / "team.jwt"
    first.write_text(link(ROOT, TEAM) + "\n")
    second = link(TEAM, CI)
    private = generate_keys("ed25519", "ci")[0]
    cfg = config_from_dict(
        {
            "build": {
                "signingKey": private,
                "delegationChain": [str(first), second],
                "scope": {"sources": ["web"], "actions": ["push"]},
            }
        }
    )
    raw = asyncio.run(sign_claims({"iat": 1}, config=cfg))
    decoded = decode_token(raw)
    assert list(decoded.header) == ["alg", "etchaChain", "kid", "typ"]
    assert decoded.header["etchaChain"] == [first.read_text().strip(), second]
    assert decoded.claims["etchaScope"] == {"sources": ["web"], "actions": ["push"]}
