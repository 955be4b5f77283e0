"""The hosts' side of `agent publish`: `sources.X.requireExp` and the token expiry gauge."""

from __future__ import annotations

import asyncio
import time

import pytest
from support import RIGHT_PRIV, RIGHT_PUB

from agent.config.schema import config_from_dict
from agent.daemon.metrics import Metrics
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token
from agent.trust.gate import Context, TrustGate
from agent.trust.policy import PolicyError


def _token(expires_in: float) -> str:
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files={"/main.jsonnet": "{}"},
        build_manifest="",
        run_vars={},
        version="",
        expires_in=expires_in,
        now=time.time(),
    )
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


def _gate(require_exp: bool) -> TrustGate:
    source = {"allowPush": True, "requireExp": require_exp}
    return TrustGate(
        config_from_dict({"run": {"verifyKeys": [RIGHT_PUB]}, "sources": {"web": source}})
    )


@pytest.mark.parametrize("context", [Context.PUSH, Context.PULL])
def test_require_exp_refuses_pushed_and_pulled_tokens_without_exp(context: Context) -> None:
    with pytest.raises(PolicyError) as info:
        asyncio.run(_gate(True).admit(_token(0), "web", context))
    assert info.value.reason == "missing_exp"
    assert "expected a token with an exp (sources.web.requireExp), got none" in str(info.value)


def test_require_exp_admits_tokens_with_exp_and_is_off_by_default() -> None:
    assert asyncio.run(_gate(True).admit(_token(60), "web", Context.PULL)).exp is not None
    assert asyncio.run(_gate(False).admit(_token(0), "web", Context.PULL)).exp is None


def test_stored_token_without_exp_is_not_refused_at_restore() -> None:
    admitted = asyncio.run(_gate(True).admit(_token(0), "web", Context.RESTORE))
    assert admitted.exp is None


def test_source_token_expiry_gauge_follows_the_applied_token() -> None:
    now = [1_000.0]
    metrics = Metrics(process_metrics=False, clock=lambda: now[0])
    metrics.pattern_expiry("web", 1_600)
    text = metrics.render()[0].decode()
    assert 'etcha_source_token_expires_in_seconds{source="web"} 600.0' in text
    now[0] = 1_700.0
    assert (
        'etcha_source_token_expires_in_seconds{source="web"} -100.0' in metrics.render()[0].decode()
    )
    metrics.pattern_expiry("web", None)
    assert 'etcha_source_token_expires_in_seconds{source="web"}' not in metrics.render()[0].decode()
