"""An accepted pattern stays applied until another replaces it (SPEC 30, 31), in-process.

Covers issue 11 points 1 and 2 and issue 12 points 3, 4 and the rollback-mark low:

- a stored token past its ``exp`` is restored and keeps correcting drift;
- the stored token is re-admitted before every run by keys, key windows, allowlists and verify
  commands, and withdrawn (logged, counted) when it no longer passes;
- an ad-hoc command (the one ``etcha push`` command) runs once, is not stored, not diffed, and does
  not move the rollback mark;
- a pull that brings nothing new is still judged against ``maxTokenAge`` (freeze protection);
- the replay cache on disk always holds every accepted ``jti``;
- the rollback mark never goes down, even when a save carries an older mark.

Real configs, real state directories, real shell commands and real signed tokens throughout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import RIGHT_PRIV, RIGHT_PUB, WRONG_PUB, config_doc

from agent.config.schema import Config, config_from_dict
from agent.daemon.metrics import Metrics
from agent.daemon.server import PushReply, reply_for
from agent.daemon.service import Daemon
from agent.daemon.sources import is_adhoc
from agent.daemon.state import SourceMeta, StateStore
from agent.daemon.status import source_status
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import decode_token, etcha_claims, sign_token
from agent.run.model import parse_commands
from agent.trust.gate import Context, TrustGate


def make_config(
    tmp: Path,
    sources: dict[str, Any],
    *,
    verify_keys: list[Any] | None = None,
    run: dict[str, Any] | None = None,
) -> Config:
    keys = [RIGHT_PUB] if verify_keys is None else verify_keys
    return config_from_dict(config_doc(tmp, sources, verify_keys=keys, run=run))


def token_for(
    run: list[dict[str, Any]],
    *,
    iat: float | None = None,
    expires_in: float = 0,
    jti: str = "",
    manifest: str = "m",
) -> str:
    claims = etcha_claims(
        pattern_entrypoint="main.jsonnet",
        pattern_files={"main.jsonnet": json.dumps({"run": run})},
        build_manifest=manifest,
        run_vars={},
        version="test",
        expires_in=expires_in,
        jti=jti,
        now=time.time() if iat is None else iat,
    )
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


def file_cmd(cid: str, path: Path) -> dict[str, str]:
    return {
        "id": cid,
        "check": f"test -f {path}",
        "change": f"touch {path}",
        "remove": f"rm -f {path}",
    }


def counter_cmd(cid: str, path: Path) -> dict[str, Any]:
    """A command that appends a line to ``path`` every time it runs."""
    return {"id": cid, "always": True, "change": f"echo run >> {path}"}


def seed(tmp_path: Path, raw: str, meta: SourceMeta) -> None:
    """Store ``raw`` as the source web's accepted token (the store takes only admitted tokens)."""
    gate = TrustGate(make_config(tmp_path, {"web": {"allowPush": True}}))
    admitted = asyncio.run(gate.admit(raw, "web", Context.RESTORE))
    StateStore(tmp_path / "state").save("web", admitted, meta)


async def push(d: Daemon, source: str, token: str, *, check: bool = False) -> PushReply:
    return reply_for(
        await d.handle_push(source, token, check=check, parent_id_filter=None, remote="test")
    )


def failures(metrics: Metrics, reason: str) -> float:
    text = metrics.render()[0].decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("agent_verify_failures_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------- expired tokens


def test_expired_stored_token_is_restored_logged_and_keeps_correcting_drift(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    a = tmp_path / "a"
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    # What `agent push` does: a 5 minute exp. The token was pushed an hour ago.
    issued = time.time() - 3600
    raw = token_for([file_cmd("a", a)], iat=issued, expires_in=300, jti="j1")
    exp = int(issued) + 300
    seed(tmp_path, raw, SourceMeta(high_water_iat=int(issued)))

    async def go() -> tuple[Any, Any, Any]:
        d = Daemon(cfg)
        await d.load()
        first = await d.run_source("web", init=True)
        a.unlink()
        tick = await d.run_source("web")
        return d.stored_token("web"), first, tick

    with caplog.at_level(logging.INFO, logger="agent.daemon"):
        stored, first, tick = asyncio.run(go())
    assert stored is not None and stored.raw == raw
    assert first.err == "" and first.changed_ids == ("a",)
    assert tick.err == "" and tick.changed_ids == ("a",)  # drift corrected past exp
    assert a.exists()
    assert (
        f"Source web: the stored token expired at {utc(exp)}; it stays applied until a newer "
        "one is accepted"
    ) in caplog.text


def test_expired_token_is_still_refused_on_delivery(tmp_path: Path) -> None:
    """exp guards delivery: the same expired token pushed again is refused."""
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    raw = token_for([file_cmd("a", tmp_path / "a")], iat=time.time() - 3600, expires_in=300)

    async def go() -> PushReply:
        d = Daemon(cfg)
        await d.load()
        return await push(d, "web", raw)

    assert asyncio.run(go()).status == 404
    assert not (tmp_path / "a").exists()


def test_max_token_age_is_not_checked_at_restore(tmp_path: Path) -> None:
    a = tmp_path / "a"
    cfg = make_config(tmp_path, {"web": {"allowPush": True, "maxTokenAge": "1m"}})
    raw = token_for([file_cmd("a", a)], iat=time.time() - 3600)
    seed(tmp_path, raw, SourceMeta())

    async def go() -> Any:
        d = Daemon(cfg)
        await d.load()
        return await d.run_source("web", init=True)

    assert asyncio.run(go()).changed_ids == ("a",)


# ---------------------------------------------------------------------------- re-admission


def test_removed_key_withdraws_the_stored_pattern_at_the_next_run(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    rotated = make_config(tmp_path, {"web": {"allowPush": True}}, verify_keys=[WRONG_PUB])
    metrics = Metrics()

    async def go() -> tuple[Any, Any, Any]:
        d = Daemon(cfg, metrics=metrics)
        await d.load()
        assert (await push(d, "web", token_for([counter_cmd("c", counter)]))).status == 200
        await d.reload(rotated)
        tick = await d.run_source("web")
        again = await d.run_source("web")
        return tick, again, d.stored_pattern("web")

    tick, again, pattern = asyncio.run(go())
    assert tick.err == "" and tick.changed_ids == ()  # withdrawn at the reload: nothing runs
    assert again.err == "" and again.changed_ids == ()
    assert pattern is None
    assert counter.read_text().splitlines() == ["run"]  # only the push ran it
    assert failures(metrics, "no_match") == 1


def test_reload_that_keeps_the_key_keeps_the_stored_token(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    more = make_config(tmp_path, {"web": {"allowPush": True}, "other": {"commands": []}})

    async def go() -> tuple[Any, Any]:
        d = Daemon(cfg)
        await d.load()
        token = token_for([counter_cmd("c", counter)])
        assert (await push(d, "web", token)).status == 200
        await d.reload(more)
        return await d.run_source("web"), d.stored_token("web")

    tick, stored = asyncio.run(go())
    assert stored is not None
    assert tick.changed_ids == ("c",)
    assert counter.read_text().splitlines() == ["run", "run"]


def test_retired_key_stops_the_stored_pattern_and_counts_key_retired(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    counter = tmp_path / "count"
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    retired_at = datetime.fromtimestamp(time.time() - 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    retired = make_config(
        tmp_path,
        {"web": {"allowPush": True}},
        verify_keys=[{"key": RIGHT_PUB, "notAfter": retired_at}],
    )
    metrics = Metrics()

    async def go() -> Any:
        d = Daemon(cfg, metrics=metrics)
        await d.load()
        assert (await push(d, "web", token_for([counter_cmd("c", counter)]))).status == 200
        await d.reload(retired)
        return await d.run_source("web")

    with caplog.at_level(logging.ERROR, logger="agent.daemon"):
        tick = asyncio.run(go())
    assert tick.changed_ids == ()
    assert counter.read_text().splitlines() == ["run"]
    assert failures(metrics, "key_retired") == 1
    assert "the stored token is no longer accepted (key_retired" in caplog.text


def test_allowed_keys_change_withdraws_a_restored_pattern(tmp_path: Path) -> None:
    counter = tmp_path / "count"
    raw = token_for([counter_cmd("c", counter)])
    seed(tmp_path, raw, SourceMeta())
    cfg = make_config(tmp_path, {"web": {"allowPush": True, "allowedKeys": ["someone-else"]}})
    metrics = Metrics()

    async def go() -> Any:
        d = Daemon(cfg, metrics=metrics)
        await d.load()
        return await d.run_source("web", init=True), d.stored_token("web")

    result, stored = asyncio.run(go())
    assert stored is None
    assert not counter.exists()
    assert failures(metrics, "key_not_allowed") == 1
    assert result.changed_ids == ()


def test_withdrawn_token_falls_back_to_the_sources_config_commands(tmp_path: Path) -> None:
    static, pushed = tmp_path / "static", tmp_path / "pushed"
    sources = {"web": {"allowPush": True, "commands": [counter_cmd("s", static)]}}
    cfg = make_config(tmp_path, sources)
    rotated = make_config(tmp_path, sources, verify_keys=[WRONG_PUB])

    async def go() -> None:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "web", token_for([counter_cmd("p", pushed)]))).status == 200
        await d.reload(rotated)  # refused at re-admission: falls back
        await d.run_source("web")  # the static commands run

    asyncio.run(go())
    assert pushed.read_text().splitlines() == ["run"]
    assert static.read_text().splitlines() == ["run"]


def test_verify_commands_run_again_before_each_run_of_the_stored_token(tmp_path: Path) -> None:
    verified, counter = tmp_path / "verified", tmp_path / "count"
    verify = [
        {
            "id": "verify",
            "always": True,
            "change": f'echo x >> {verified}; printf %s "$ETCHA_JWT"',
            "onChange": ["etcha:jwt"],
        }
    ]
    refuse = [{"id": "verify", "always": True, "change": "exit 1"}]
    cfg = make_config(
        tmp_path, {"web": {"allowPush": True, "verifyCommands": verify}}, verify_keys=[]
    )
    closed = make_config(
        tmp_path, {"web": {"allowPush": True, "verifyCommands": refuse}}, verify_keys=[]
    )

    async def go() -> Any:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "web", token_for([counter_cmd("c", counter)]))).status == 200
        await d.run_source("web")
        await d.reload(closed)
        return await d.run_source("web")

    refused = asyncio.run(go())
    assert len(verified.read_text().splitlines()) == 2  # the push, then the re-admission
    assert counter.read_text().splitlines() == ["run", "run"]
    assert refused.changed_ids == ()  # withdrawn when the reload re-admitted it


# ---------------------------------------------------------------------------- ad-hoc commands


def test_is_adhoc_only_for_the_single_etcha_push_command() -> None:
    one = parse_commands([{"id": "etcha push", "always": True, "change": "true"}], where="t")
    assert is_adhoc(one)
    two = parse_commands(
        [{"id": "etcha push", "change": "true"}, {"id": "b", "change": "true"}], where="t"
    )
    assert not is_adhoc(two)
    other = parse_commands([{"id": "push", "change": "true"}], where="t")
    assert not is_adhoc(other)


def test_adhoc_push_runs_once_and_leaves_the_stored_pattern_state_and_mark(tmp_path: Path) -> None:
    managed, adhoc_out = tmp_path / "managed", tmp_path / "adhoc"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})
    pattern = token_for([file_cmd("managed", managed)], iat=time.time() - 10)
    adhoc = token_for(
        [{"id": "etcha push", "always": True, "change": f"echo ran >> {adhoc_out}; echo hello"}],
        jti="adhoc-1",
        expires_in=300,
    )
    state = tmp_path / "state"

    async def go() -> tuple[PushReply, PushReply, Any, Any]:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "core", pattern)).status == 200
        before = ((state / "core.jwt").read_bytes(), (state / "core.meta.json").read_text())
        reply = await push(d, "core", adhoc)
        after = ((state / "core.jwt").read_bytes(), (state / "core.meta.json").read_text())
        assert before == after  # not saved, mark not moved
        replay = await push(d, "core", adhoc)
        managed.unlink()
        tick = await d.run_source("core")
        return reply, replay, tick, d.stored_token("core")

    reply, replay, tick, stored = asyncio.run(go())
    assert reply.status == 200 and reply.body is not None
    assert reply.body["changedIDs"] == ["etcha push"]
    assert reply.body["removedIDs"] is None  # nothing the source managed was removed
    outputs = json.dumps(reply.body)
    assert "hello" in outputs  # its output comes back in the Result
    assert replay.status == 404  # trust checks apply: the jti is not accepted twice
    assert stored is not None and stored.raw == pattern
    assert tick.changed_ids == ("managed",)  # the stored pattern keeps running
    assert adhoc_out.read_text().splitlines() == ["ran"]  # ad-hoc ran exactly once
    assert managed.exists()
    meta = json.loads((state / "core.meta.json").read_text())
    assert meta["high_water_iat"] == decode_token(pattern).claims["iat"]


def test_adhoc_push_is_refused_by_the_rollback_mark_like_any_push(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})
    newer = token_for([file_cmd("m", tmp_path / "m")])
    old_adhoc = token_for(
        [{"id": "etcha push", "always": True, "change": f"touch {out}"}], iat=time.time() - 3600
    )

    async def go() -> PushReply:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "core", newer)).status == 200
        return await push(d, "core", old_adhoc)

    assert asyncio.run(go()).status == 404
    assert not out.exists()


def test_adhoc_push_to_a_fresh_source_saves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    cfg = make_config(tmp_path, {"core": {"allowPush": True, "runFrequency": "1h"}})
    adhoc = token_for([{"id": "etcha push", "always": True, "change": f"echo x >> {out}"}])

    async def go() -> Any:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "core", adhoc)).status == 200
        tick = await d.run_source("core")
        return tick, d.stored_pattern("core")

    tick, pattern = asyncio.run(go())
    assert pattern is None and tick.changed_ids == ()
    assert out.read_text().splitlines() == ["x"]
    assert not (tmp_path / "state" / "core.jwt").exists()


# ---------------------------------------------------------------------------- freeze protection


@asynccontextmanager
async def etag_server(state: dict[str, Any]) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        state["requests"] += 1
        if request.headers.get("If-None-Match") == '"v1"':
            return web.Response(status=304, headers={"ETag": '"v1"'})
        return web.Response(text=state["body"], headers={"ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/p.jwt", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}/p.jwt"
    finally:
        await runner.cleanup()


def test_max_token_age_fires_on_a_304_and_the_last_good_pattern_keeps_running(
    tmp_path: Path,
) -> None:
    a = tmp_path / "a"
    state: dict[str, Any] = {"requests": 0, "body": token_for([file_cmd("a", a)])}
    metrics = Metrics()

    async def go() -> tuple[Any, Any, bool]:
        async with etag_server(state) as url:
            lenient = make_config(tmp_path, {"p": {"pullPaths": [url], "maxTokenAge": "1h"}})
            d = Daemon(lenient, metrics=metrics)
            await d.load()
            first = await d.run_source("p", init=True)
            # The server keeps serving the same token; now it is older than maxTokenAge.
            strict = make_config(tmp_path, {"p": {"pullPaths": [url], "maxTokenAge": "1s"}})
            await d.reload(strict)
            await asyncio.sleep(2.1)
            a.unlink()
            tick = await d.run_source("p")
            return first, tick, d.sources["p"].stale

    first, tick, stale = asyncio.run(go())
    assert state["requests"] == 2  # the second pull was answered 304
    assert first.changed_ids == ("a",)
    assert failures(metrics, "stale") == 1
    assert stale
    assert tick.changed_ids == ("a",)  # the last good pattern keeps running
    assert a.exists()


def test_max_token_age_fires_on_an_identical_file_body(tmp_path: Path) -> None:
    a, jwt = tmp_path / "a", tmp_path / "p.jwt"
    jwt.write_text(token_for([file_cmd("a", a)], iat=time.time() - 30))
    metrics = Metrics()

    async def go() -> None:
        lenient = make_config(tmp_path, {"p": {"pullPaths": [str(jwt)], "maxTokenAge": "1h"}})
        d = Daemon(lenient, metrics=metrics)
        await d.load()
        await d.run_source("p", init=True)
        assert failures(metrics, "stale") == 0
        assert source_status(d.sources["p"], None)["stale"] is False
        strict = make_config(tmp_path, {"p": {"pullPaths": [str(jwt)], "maxTokenAge": "10s"}})
        await d.reload(strict)
        await d.run_source("p")
        await d.run_source("p")
        # The status endpoint shows the freeze (issue 12 point 4).
        assert source_status(d.sources["p"], None)["stale"] is True

    asyncio.run(go())
    assert failures(metrics, "stale") == 2  # every pull that keeps the stale token counts


# ---------------------------------------------------------------------------- replay cache, mark


def test_replay_cache_on_disk_holds_every_accepted_jti_after_concurrent_pushes(
    tmp_path: Path,
) -> None:
    cfg = make_config(tmp_path, {"web": {"allowPush": True, "runMulti": True}})
    now = time.time()
    tokens = [
        token_for([counter_cmd("c", tmp_path / "c")], iat=now, jti=f"j{i}", expires_in=600)
        for i in range(50)
    ]

    async def first() -> list[int]:
        d = Daemon(cfg)
        await d.load()
        replies = await asyncio.gather(*(push(d, "web", t) for t in tokens))
        return [r.status for r in replies]

    async def restarted() -> list[int]:
        d = Daemon(cfg)
        await d.load()
        replies = await asyncio.gather(*(push(d, "web", t) for t in tokens))
        return [r.status for r in replies]

    assert asyncio.run(first()) == [200] * 50
    saved = {jti for jti, _ in StateStore(tmp_path / "state").load_replay()}
    assert saved == {f"j{i}" for i in range(50)}
    assert asyncio.run(restarted()) == [404] * 50


def test_rollback_mark_is_the_max_of_the_stored_mark_and_never_goes_down(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"web": {"allowPush": True, "allowRollback": True}})
    now = int(time.time())
    newer = token_for([file_cmd("a", tmp_path / "a")], iat=now)
    older = token_for([file_cmd("b", tmp_path / "b")], iat=now - 100, manifest="older")

    async def go() -> int | None:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "web", newer)).status == 200
        # A pull that started before the push carried the mark it saw then (none).
        assert (await push(d, "web", older)).status == 200  # allowRollback: accepted
        await d.runner.save("web", d.stored_token("web"), SourceMeta(high_water_iat=None))  # type: ignore[arg-type]
        return d.sources["web"].meta.high_water_iat

    assert asyncio.run(go()) == now
    meta = json.loads((tmp_path / "state" / "web.meta.json").read_text())
    assert meta["high_water_iat"] == now


def test_refusal_under_the_source_lock_is_the_uniform_empty_404(tmp_path: Path) -> None:
    """An older token passes the first check, then waits for the lock behind a newer one."""
    slow, old_out = tmp_path / "slow", tmp_path / "old"
    cfg = make_config(tmp_path, {"web": {"allowPush": True}})
    now = time.time()
    newer = token_for([{"id": "slow", "always": True, "change": f"sleep 1; touch {slow}"}], iat=now)
    older = token_for([counter_cmd("old", old_out)], iat=now - 10, manifest="older")

    async def go() -> tuple[PushReply, PushReply]:
        d = Daemon(cfg)
        await d.load()
        first = asyncio.create_task(push(d, "web", newer))
        await asyncio.sleep(0.3)  # the newer run holds the lock; the mark is not moved yet
        second = await push(d, "web", older)
        return await first, second

    first, second = asyncio.run(go())
    assert first.status == 200
    assert second == PushReply(404)  # no body: the same answer as every other refusal
    assert not old_out.exists()
