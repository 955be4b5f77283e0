"""Trust policy: rollback, replay, freeze, allowlists and key windows, unit and in-process daemon.

Tokens are really signed (the interop key reqYEklgP4, plus generated keys); the daemon runs in
process with a real state directory and real pull files. The subprocess daemon is exercised in
tests/integration/test_trust_policy.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import tempfile
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import RIGHT_PRIV, RIGHT_PUB, config_doc

from agent.config.schema import Config, config_from_dict
from agent.core.errors import VerifyError
from agent.daemon.server import PushReply, reply_for
from agent.daemon.service import Daemon
from agent.daemon.state import ReplayCache, StateStore
from agent.daemon.telemetry import NoMetrics
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import VerifiedToken, etcha_claims, sign_token
from agent.tools.push import push_expires_in
from agent.trust.gate import Context, TrustGate
from agent.trust.policy import (
    PolicyError,
    check_rollback,
    check_stale,
    expiring_keys,
    next_high_water,
)
from agent.trust.verify import verify_for_source

OTHER_PRIV, OTHER_PUB = generate_keys("ed25519", kid="other")
NOW = time.time()
NOW_BASE = int(NOW) - 1000


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def make_token(
    iat: float,
    *,
    key: str = RIGHT_PRIV,
    jti: str = "",
    expires_in: float = 0,
    marker: str = "",
    run: str = "[{id: 'noop'}]",
) -> str:
    """A signed token whose pattern differs by ``marker`` (so pulls see a new pattern)."""
    files = {"main.jsonnet": f"{{run: {run}, marker:: {json.dumps(marker or str(iat))}}}"}
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files=files,
        build_manifest=marker or str(iat),
        run_vars={},
        version="test",
        expires_in=expires_in,
        jti=jti,
        now=iat,
    )
    return sign_token(claims, parse_signing_key(key))


def make_config(
    tmp: Path,
    source: Mapping[str, Any] | None = None,
    *,
    run: Mapping[str, Any] | None = None,
    verify_keys: list[Any] | None = None,
) -> Config:
    src: dict[str, Any] = {"allowPush": True}
    src.update(source or {})
    keys = [RIGHT_PUB] if verify_keys is None else verify_keys
    return config_from_dict(config_doc(tmp, {"web": src}, verify_keys=keys, run=run))


def verified(
    token: str, cfg: Config, source: str = "web", now: float | None = None
) -> VerifiedToken:
    return asyncio.run(verify_for_source(token, config=cfg, source=source, now=now))


def check_push(
    token: VerifiedToken,
    *,
    config: Config,
    source: str,
    high_water_iat: int | None,
    replay: ReplayCache,
    now: float | None = None,
) -> None:
    """The push checks, through the trust gate (context push)."""
    gate = TrustGate(config, marks=lambda _: high_water_iat, replay=replay)
    asyncio.run(gate.admit(token.raw, source, Context.PUSH, now=now))


def check_offline(
    token: VerifiedToken, *, config: Config, source: str, now: float | None = None
) -> None:
    """The offline checks (``agent jwt -s``), through the trust gate."""
    asyncio.run(TrustGate(config).admit(token.raw, source, Context.OFFLINE, now=now))


async def push(d: Daemon, token: str, source: str = "web") -> PushReply:
    return reply_for(
        await d.handle_push(source, token, check=False, parent_id_filter=None, remote="test")
    )


async def started(cfg: Config, metrics: NoMetrics | None = None) -> Daemon:
    d = Daemon(cfg, metrics=metrics)
    await d.load()
    return d


def refusals(caplog: pytest.LogCaptureFixture, reason: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"reason {reason}," in r.getMessage()]


class FakeMetrics(NoMetrics):
    def __init__(self) -> None:
        self.failures: list[tuple[str, str]] = []

    def verify_failure(self, source: str, reason: str) -> None:
        self.failures.append((source, reason))


# ---------------------------------------------------------------------------- pure checks


def test_rollback_check_refuses_older_allows_equal_and_newer(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    src = cfg.sources["web"]
    old = verified(make_token(NOW - 100), cfg)
    with pytest.raises(PolicyError) as info:
        check_rollback(old, src, source_name="web", high_water_iat=int(NOW))
    assert info.value.reason == "rollback"
    assert info.value.key_id == "reqYEklgP4"
    assert "source web" in str(info.value)
    check_rollback(old, src, source_name="web", high_water_iat=int(NOW - 100))  # equal
    check_rollback(old, src, source_name="web", high_water_iat=int(NOW - 200))  # newer
    check_rollback(old, src, source_name="web", high_water_iat=None)  # no mark yet
    lenient = make_config(tmp_path, {"allowRollback": True}).sources["web"]
    check_rollback(old, lenient, source_name="web", high_water_iat=int(NOW))


def test_high_water_mark_never_goes_down(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    old = verified(make_token(NOW - 100), cfg)
    assert next_high_water(None, old) == int(NOW - 100)
    assert next_high_water(int(NOW), old) == int(NOW)
    assert next_high_water(int(NOW - 500), old) == int(NOW - 100)


def test_max_token_age_refuses_stale_tokens_only(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"maxTokenAge": "1h"})
    src = cfg.sources["web"]
    fresh = verified(make_token(NOW - 60), cfg)
    stale = verified(make_token(NOW - 7200), cfg)
    check_stale(fresh, src, source_name="web", now=NOW)
    with pytest.raises(PolicyError) as info:
        check_stale(stale, src, source_name="web", now=NOW)
    assert info.value.reason == "stale"
    check_stale(stale, make_config(tmp_path).sources["web"], source_name="web", now=NOW)  # off


def test_push_requires_jti_and_exp_when_configured(tmp_path: Path) -> None:
    strict = make_config(tmp_path, run={"pushRequireJti": True, "pushRequireExp": True})
    cache = ReplayCache(10)
    bare = verified(make_token(NOW), strict)
    with pytest.raises(PolicyError) as info:
        check_push(bare, config=strict, source="web", high_water_iat=None, replay=cache)
    assert info.value.reason == "missing_jti"
    no_exp = verified(make_token(NOW, jti="a"), strict)
    with pytest.raises(PolicyError) as info:
        check_push(no_exp, config=strict, source="web", high_water_iat=None, replay=cache)
    assert info.value.reason == "missing_exp"
    good = verified(make_token(NOW, jti="b", expires_in=3600), strict)
    check_push(good, config=strict, source="web", high_water_iat=None, replay=cache)
    lax = make_config(tmp_path)
    check_push(bare, config=lax, source="web", high_water_iat=None, replay=cache)
    assert len(cache) == 1  # refused tokens never consumed a jti


def test_replay_of_a_push_jti_is_refused_and_a_new_jti_accepted(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    cache = ReplayCache(10)
    first = verified(make_token(NOW, jti="j1", expires_in=3600), cfg)
    check_push(first, config=cfg, source="web", high_water_iat=None, replay=cache, now=NOW)
    with pytest.raises(PolicyError) as info:
        check_push(first, config=cfg, source="web", high_water_iat=None, replay=cache, now=NOW)
    assert info.value.reason == "replay"
    second = verified(make_token(NOW, jti="j2", expires_in=3600), cfg)
    check_push(second, config=cfg, source="web", high_water_iat=None, replay=cache, now=NOW)


def test_replay_cache_stays_bounded_with_ten_thousand_jtis() -> None:
    cache = ReplayCache(10_000)
    for i in range(10_000):
        assert cache.remember(f"jti-{i}", NOW + 300, now=NOW)
    assert len(cache) == 10_000
    assert not cache.remember("jti-9999", NOW + 300, now=NOW)
    for i in range(10_000, 15_000):
        cache.remember(f"jti-{i}", NOW + 300, now=NOW)
    assert len(cache) == 10_000
    assert len(cache._heap) <= 2 * 10_000 + 16
    cache.remember("late", NOW + 2000, now=NOW + 1000)  # every earlier entry has expired
    assert len(cache) == 1


def test_replay_cache_snapshot_survives_a_round_trip_through_the_state_dir(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    cache = ReplayCache(100)
    cache.remember("a", NOW + 300, now=NOW)
    cache.remember("forever", None, now=NOW)
    cache.remember("gone", NOW - 300, now=NOW)
    store.save_replay(cache.snapshot(now=NOW))
    assert (store.replay_path().stat().st_mode & 0o777) == 0o600
    again = ReplayCache(100)
    again.restore(store.load_replay(), now=NOW)
    assert not again.remember("a", NOW + 300, now=NOW)
    assert not again.remember("forever", None, now=NOW)
    assert again.remember("gone", NOW + 300, now=NOW)
    store.replay_path().write_text("{not json")
    assert store.load_replay() == []


def test_allowlist_hit_miss_and_global_key_not_on_the_source_list(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path, {"allowedKeys": ["other"], "verifyKeys": [OTHER_PUB]}, verify_keys=[RIGHT_PUB]
    )
    hit = verified(make_token(NOW, key=OTHER_PRIV), cfg)
    assert hit.key_id == "other"
    with pytest.raises(PolicyError) as info:  # signed by the global key, not on the list
        verified(make_token(NOW, key=RIGHT_PRIV), cfg)
    assert info.value.reason == "key_not_allowed"
    assert info.value.key_id == "reqYEklgP4"
    assert "allowedKeys" in str(info.value)
    anyone = make_config(tmp_path, {"verifyKeys": [OTHER_PUB]})
    assert verified(make_token(NOW, key=RIGHT_PRIV), anyone).key_id == "reqYEklgP4"
    unknown_priv, _ = generate_keys("ed25519", kid="stranger")
    with pytest.raises(VerifyError) as miss:
        verified(make_token(NOW, key=unknown_priv), cfg)
    assert miss.value.reason == "no_match"


def test_allowlist_uses_the_configured_key_id_not_the_token_kid(tmp_path: Path) -> None:
    # The same key material configured under the id "renamed": the header kid is reqYEklgP4.
    renamed = RIGHT_PUB.rsplit(":", 1)[0] + ":renamed"
    cfg = make_config(tmp_path, {"allowedKeys": ["renamed"]}, verify_keys=[renamed])
    assert verified(make_token(NOW), cfg).key_id == "renamed"
    cfg2 = make_config(tmp_path, {"allowedKeys": ["reqYEklgP4"]}, verify_keys=[renamed])
    with pytest.raises(PolicyError) as info:
        verified(make_token(NOW), cfg2)
    assert info.value.reason == "key_not_allowed"


def test_key_window_before_inside_and_after(tmp_path: Path) -> None:
    window = {"key": RIGHT_PUB, "notBefore": rfc3339(NOW), "notAfter": rfc3339(NOW + 3600)}
    cfg = make_config(tmp_path, verify_keys=[window])
    token = make_token(NOW - 100)
    with pytest.raises(PolicyError) as before:
        verified(token, cfg, now=NOW - 10)
    assert before.value.reason == "key_not_yet_valid"
    assert verified(token, cfg, now=NOW + 10).key_id == "reqYEklgP4"
    with pytest.raises(PolicyError) as after:
        verified(token, cfg, now=NOW + 3700)
    assert after.value.reason == "key_retired"
    assert "retired" in str(after.value)


def test_key_rotation_with_overlapping_windows_uses_the_key_in_its_window(tmp_path: Path) -> None:
    old = {"key": RIGHT_PUB, "notAfter": rfc3339(NOW)}
    new = {"key": OTHER_PUB, "notBefore": rfc3339(NOW - 600)}
    cfg = make_config(tmp_path, verify_keys=[old, new])
    signed_by_new = make_token(NOW - 900, key=OTHER_PRIV)
    signed_by_old = make_token(NOW - 900, key=RIGHT_PRIV)
    assert verified(signed_by_new, cfg, now=NOW + 60).key_id == "other"
    assert verified(signed_by_old, cfg, now=NOW - 60).key_id == "reqYEklgP4"
    with pytest.raises(PolicyError) as info:
        verified(signed_by_old, cfg, now=NOW + 60)
    assert info.value.reason == "key_retired"


def test_offline_check_applies_allowlist_and_max_token_age(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"maxTokenAge": "1h", "allowedKeys": ["reqYEklgP4"]})
    token = verified(make_token(NOW - 7200), make_config(tmp_path))
    with pytest.raises(PolicyError) as info:
        check_offline(token, config=cfg, source="web", now=NOW)
    assert info.value.reason == "stale"
    check_offline(token, config=cfg, source="", now=NOW)  # no source: no source policy
    other = make_config(tmp_path, {"allowedKeys": ["other"]})
    with pytest.raises(PolicyError) as miss:
        check_offline(verified(make_token(NOW), make_config(tmp_path)), config=other, source="web")
    assert miss.value.reason == "key_not_allowed"


def test_keys_near_not_after_are_reported_for_the_start_up_warning(tmp_path: Path) -> None:
    soon = {"key": RIGHT_PUB, "notAfter": rfc3339(NOW + 3 * 86400)}
    later = {"key": OTHER_PUB, "notAfter": rfc3339(NOW + 30 * 86400)}
    cfg = make_config(tmp_path, {"verifyKeys": [later]}, verify_keys=[soon])
    found = expiring_keys(cfg, now=NOW)
    assert [(k.where, k.key_id) for k in found] == [("run.verifyKeys", "reqYEklgP4")]
    assert 2.9 * 86400 < found[0].seconds_left < 3.1 * 86400


def test_push_token_lifetime_defaults_to_five_minutes() -> None:
    assert push_expires_in(config_from_dict({}), 0) == 300
    assert push_expires_in(config_from_dict({}), 60) == 60
    assert push_expires_in(config_from_dict({"build": {"pushTokenExpiresIn": "1h"}}), 0) == 3600


# ---------------------------------------------------------------------------- daemon


def test_push_rollback_refused_with_plain_404_survives_restart_and_allow_rollback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    NOW = time.time()
    cfg = make_config(tmp_path)
    captured, newer = make_token(NOW - 600), make_token(NOW - 60)

    async def go() -> None:
        metrics = FakeMetrics()
        d = await started(cfg, metrics)
        assert (await push(d, captured)).status == 200
        assert (await push(d, newer)).status == 200
        refused = await push(d, captured)
        unknown = reply_for(
            await d.handle_push("nope", captured, check=False, parent_id_filter=None, remote="t")
        )
        assert (refused.status, refused.body) == (unknown.status, unknown.body) == (404, None)
        # the refusal is counted; so is the unknown source (as source "", reason not_allowed)
        assert metrics.failures == [("web", "rollback"), ("", "not_allowed")]
        assert d.stored_token("web") is not None
        assert d.stored_token("web").raw == newer  # type: ignore[union-attr]
        again = await started(cfg)  # restart: the mark came back from the state dir
        assert (await push(again, captured)).status == 404
        lenient = await started(make_config(tmp_path, {"allowRollback": True}))
        assert (await push(lenient, captured)).status == 200

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    lines = refusals(caplog, "rollback")
    assert len(lines) == 2
    assert all("Source web" in line and "key reqYEklgP4" in line for line in lines)


def test_equal_iat_is_accepted(tmp_path: Path) -> None:
    NOW = time.time()
    cfg = make_config(tmp_path)

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, make_token(NOW, marker="a"))).status == 200
        assert (await push(d, make_token(NOW, marker="b"))).status == 200

    asyncio.run(go())


def test_restored_token_older_than_the_mark_is_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    NOW = time.time()
    cfg = make_config(tmp_path)
    captured = make_token(NOW - 600)

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, make_token(NOW - 60))).status == 200
        StateStore(tmp_path / "state").token_path("web").write_text(captured)  # swapped on disk
        again = await started(cfg)
        assert again.stored_token("web") is None

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert len(refusals(caplog, "rollback")) == 1


def test_pull_serving_an_older_token_is_refused_and_the_newer_pattern_stays(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    NOW = time.time()
    served = tmp_path / "served.jwt"
    marker = tmp_path / "applied"
    cfg = make_config(tmp_path, {"allowPush": False, "pullPaths": [str(served)]})

    def cmd(name: str) -> str:
        return json.dumps(
            [
                {
                    "id": name,
                    "check": f"grep -qx {name} {marker}",
                    "change": f"echo {name} > {marker}",
                }
            ]
        )

    async def go() -> None:
        d = await started(cfg)
        served.write_text(make_token(NOW - 60, run=cmd("new"), marker="new"))
        assert not (await d.run_source("web")).err
        assert marker.read_text().strip() == "new"
        served.write_text(make_token(NOW - 600, run=cmd("old"), marker="old"))
        await d.run_source("web")
        assert marker.read_text().strip() == "new"
        assert d.stored_token("web").build_manifest == "new"  # type: ignore[union-attr]

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert len(refusals(caplog, "rollback")) == 1


def test_push_replay_refused_new_jti_accepted_and_replay_survives_restart(tmp_path: Path) -> None:
    NOW = time.time()
    cfg = make_config(tmp_path)
    token = make_token(NOW, jti="once", expires_in=3600)

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, token)).status == 200
        assert (await push(d, token)).status == 404
        assert (await push(d, make_token(NOW, jti="twice", expires_in=3600))).status == 200
        again = await started(cfg)
        assert (await push(again, token)).status == 404

    asyncio.run(go())


def test_push_require_jti_and_exp_refuse_etcha_style_tokens(tmp_path: Path) -> None:
    NOW = time.time()
    cfg = make_config(tmp_path, run={"pushRequireJti": True, "pushRequireExp": True})

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, make_token(NOW))).status == 404
        assert (await push(d, make_token(NOW, jti="x"))).status == 404
        assert (await push(d, make_token(NOW, jti="x", expires_in=3600))).status == 200

    asyncio.run(go())


def test_max_token_age_on_push_and_on_pull(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    NOW = time.time()
    served = tmp_path / "served.jwt"
    cfg = make_config(tmp_path, {"maxTokenAge": "10m", "pullPaths": [str(served)]})

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, make_token(NOW - 3600))).status == 404
        assert (await push(d, make_token(NOW - 60, marker="fresh"))).status == 200
        served.write_text(make_token(NOW - 1200, marker="old-but-newer-than-nothing"))
        await d.run_source("web")
        assert d.stored_token("web").build_manifest == "fresh"  # type: ignore[union-attr]

    with caplog.at_level(logging.ERROR):
        asyncio.run(go())
    assert len(refusals(caplog, "stale")) == 2


def test_allowlist_and_key_windows_refuse_pushes_in_the_daemon(tmp_path: Path) -> None:
    NOW = time.time()
    cfg = make_config(
        tmp_path,
        {"allowedKeys": ["other"], "verifyKeys": [OTHER_PUB]},
        verify_keys=[RIGHT_PUB],
    )

    async def go() -> None:
        metrics = FakeMetrics()
        d = await started(cfg, metrics)
        assert (await push(d, make_token(NOW))).status == 404
        assert (await push(d, make_token(NOW, key=OTHER_PRIV))).status == 200
        assert metrics.failures == [("web", "key_not_allowed")]

    asyncio.run(go())


def test_key_window_end_is_not_extended_by_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    not_after = time.time() + 1.5
    window = {"key": RIGHT_PUB, "notAfter": rfc3339(not_after)}
    cfg = make_config(tmp_path, verify_keys=[window])

    async def go() -> None:
        d = await started(cfg)
        assert (await push(d, make_token(time.time()))).status == 200
        await asyncio.sleep(max(0.0, not_after - time.time()) + 0.2)
        again = await started(cfg)  # restart after notAfter: the cached token is not restored
        assert again.stored_token("web") is None
        assert (await push(again, make_token(time.time()))).status == 404

    with caplog.at_level(logging.WARNING):
        asyncio.run(go())
    messages = [r.getMessage() for r in caplog.records]
    assert any("key_retired" in m for m in messages)
    assert any("reqYEklgP4 retires at" in m for m in messages)  # the start-up warning


# ---------------------------------------------------------------------------- property

OPS = st.lists(
    st.tuples(st.sampled_from(["push", "pull"]), st.integers(min_value=0, max_value=5)),
    min_size=1,
    max_size=8,
)


def _accepted_iats(ops: list[tuple[str, int]], *, allow_rollback: bool) -> list[int]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        served = root / "served.jwt"
        cfg = make_config(root, {"pullPaths": [str(served)], "allowRollback": allow_rollback})
        base = NOW_BASE

        async def go() -> list[int]:
            d = await started(cfg)
            seen: list[int] = []
            last = ""
            for n, (kind, step) in enumerate(ops):
                token = make_token(base + 10 * step, marker=f"{n}-{step}")
                if kind == "push":
                    await push(d, token)
                else:
                    served.write_text(token)
                    await d.run_source("web")
                current = d.stored_token("web")
                if current is not None and current.iat is not None:
                    if not seen or current.raw != last:
                        seen.append(current.iat)
                    last = current.raw
            return seen

        return asyncio.run(go())


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_accepted_iat_never_decreases_across_pushes_and_pulls(ops: list[tuple[str, int]]) -> None:
    seen = _accepted_iats(ops, allow_rollback=False)
    assert seen == sorted(seen)


def test_allow_rollback_lets_the_accepted_iat_decrease() -> None:
    ops = [("push", 5), ("pull", 1), ("push", 0)]
    assert _accepted_iats(ops, allow_rollback=True) == [NOW_BASE + 50, NOW_BASE + 10, NOW_BASE]
    assert _accepted_iats(ops, allow_rollback=False) == [NOW_BASE + 50]
