"""A fuzzed ``etchaChain`` header: hostile values are refused, never a crash, never an admission.

The pool of links is built so that no combination of them is a valid chain for the signing key
(no unmodified link delegates to it), so any admission is a bug. Mutated links keep the shape of
a JWT, to reach the signature and claim checks, not only the JSON type checks.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.config.schema import config_from_dict
from agent.core.errors import VerifyError
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import TYP_DELEGATION, sign_token
from agent.trust.chain import delegation_claims
from agent.trust.gate import Context, TrustGate

settings.register_profile(
    "chain-fuzz",
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)

NOW = time.time()
_KEYS = {name: generate_keys("ed25519", name) for name in ("root", "team", "other", "ci")}
PRIV = {name: parse_signing_key(pair[0]) for name, pair in _KEYS.items()}
PUB = {name: pair[1] for name, pair in _KEYS.items()}
CONFIG = config_from_dict(
    {"run": {"trustRoots": [PUB["root"]]}, "sources": {"web": {"allowPush": True}}}
)


def _link(signer: str, subject: str, **change: Any) -> str:
    claims = delegation_claims(
        subject=PUB[subject],
        sources=["web"],
        actions=["push", "delegate"],
        issuer=signer,
        jti="j",
        now=NOW - 60,
        expires_in=3600,
    )
    claims.update(change)
    return sign_token(claims, PRIV[signer], typ=TYP_DELEGATION)


#: Valid-looking links, none of which ends a chain at "ci".
POOL = [
    _link("root", "team"),
    _link("team", "other"),
    _link("other", "team"),
    _link("root", "other"),
    _link("ci", "ci"),
    _link("team", "team"),
    _link("root", "root"),
    sign_token({"iat": int(NOW)}, PRIV["root"]),  # a pattern token as a link
]
TARGET = _link("root", "ci")  # only ever used mutated


def _mutate(text: str, position: int, char: str) -> str:
    index = position % len(text)
    if text[index] == char:
        return text[:index] + text[index + 1 :]
    return text[:index] + char + text[index + 1 :]


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=5,
)
mutated = st.builds(
    _mutate,
    st.sampled_from([TARGET, *POOL]),
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from("A_-.xe0="),
)
link_like = st.one_of(st.sampled_from(POOL), mutated, st.text(max_size=20), json_leaf)
chain_value = st.one_of(st.lists(link_like, max_size=5), json_value)


@settings(settings.get_profile("chain-fuzz"))
@given(value=chain_value)
def test_fuzzed_etcha_chain_is_refused_without_a_crash(value: Any) -> None:
    token = sign_token({"iat": int(NOW)}, PRIV["ci"], header={"etchaChain": value})
    gate = TrustGate(CONFIG)
    loop = _LOOP
    try:
        loop.run_until_complete(gate.admit(token, "web", Context.OFFLINE))
    except VerifyError:
        return
    raise AssertionError("a fuzzed chain was admitted")


_LOOP = asyncio.new_event_loop()
