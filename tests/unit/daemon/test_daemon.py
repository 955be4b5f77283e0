"""The daemon's sources, start-up, pull, diff-run, locks and state, driven in-process.

Every test uses a real config, a real state directory, real shell commands and real signed
tokens (the interop key reqYEklgP4 signs; ZcxoeWfSRt is the wrong key). HTTP pulls go to a real
aiohttp server on 127.0.0.1. The subprocess and CLI paths are in tests/integration/.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import stat
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import RIGHT_PRIV, RIGHT_PUB, WRONG_PRIV, WRONG_PUB, config_doc, free_port

from agent.config.schema import Config, config_from_dict
from agent.core.errors import ConfigError
from agent.daemon.app import parse_listen_address
from agent.daemon.server import PushReply, reply_for
from agent.daemon.service import Daemon, check_verifiers
from agent.jws.compare import same_pattern
from agent.jws.keys import parse_signing_key
from agent.jws.tokens import etcha_claims, sign_token, verify_token
from agent.pattern.load import load_from_text
from agent.tools.build import build_token


def make_config(
    tmp: Path,
    sources: Mapping[str, Any],
    *,
    run: Mapping[str, Any] | None = None,
    verify_keys: tuple[str, ...] = (RIGHT_PUB,),
    signing_key: str = RIGHT_PRIV,
) -> Config:
    build = {"signingKey": signing_key}
    return config_from_dict(config_doc(tmp, sources, verify_keys=verify_keys, run=run, build=build))


def file_cmd(cid: str, path: Path) -> dict[str, str]:
    """A command that creates ``path`` when missing and removes it on removal."""
    return {
        "id": cid,
        "check": f"test -f {path}",
        "change": f"touch {path}",
        "remove": f"rm -f {path}",
    }


async def sign(cfg: Config, run: list[dict[str, Any]], *, key: str = RIGHT_PRIV) -> str:
    signer = config_from_dict({"build": {"signingKey": key}})
    loaded = load_from_text(json.dumps({"run": run}), config=cfg, source="")
    return await build_token(loaded, config=signer)


async def push(d: Daemon, source: str, token: str, *, check: bool = False) -> PushReply:
    return reply_for(
        await d.handle_push(source, token, check=check, parent_id_filter=None, remote="test")
    )


def ids(reply: PushReply, key: str) -> list[str]:
    assert reply.body is not None
    return list(reply.body[key] or [])


# ---------------------------------------------------------------------------- start-up checks


def test_refuses_to_start_when_a_token_source_has_no_verifier(tmp_path: Path) -> None:
    for source in ({"allowPush": True}, {"pullPaths": [str(tmp_path / "x.jwt")]}):
        cfg = make_config(tmp_path, {"web": source}, verify_keys=())
        with pytest.raises(ConfigError, match=r"sources\.web.*verifyKeys.*verifyCommands"):
            check_verifiers(cfg)
    verify_cmds = {
        "allowPush": True,
        "verifyCommands": [{"id": "v", "always": True, "change": "true"}],
    }
    check_verifiers(make_config(tmp_path, {"web": verify_cmds}, verify_keys=()))
    own_key = {"allowPush": True, "verifyKeys": [RIGHT_PUB]}
    check_verifiers(make_config(tmp_path, {"web": own_key}, verify_keys=()))
    check_verifiers(make_config(tmp_path, {"static": {"commands": []}}, verify_keys=()))


def test_listen_address_forms() -> None:
    assert parse_listen_address(":4000") == (None, 4000)
    assert parse_listen_address("127.0.0.1:8443") == ("127.0.0.1", 8443)
    assert parse_listen_address("[::1]:4000") == ("::1", 4000)
    for bad in ("4000", "host:", "host:99999", "host:http"):
        with pytest.raises(ConfigError, match="listenAddress"):
            parse_listen_address(bad)


# ---------------------------------------------------------------------------- push / diff-run


def test_push_tutorial_changes_then_removes_then_reports_no_changes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})

    async def go() -> tuple[PushReply, PushReply, PushReply]:
        d = Daemon(cfg)
        await d.load()
        first = await push(
            d, "core", await sign(cfg, [file_cmd("copy file", a), file_cmd("write a file", b)])
        )
        assert a.exists() and b.exists()
        second_token = await sign(cfg, [file_cmd("hello", c)])
        second = await push(d, "core", second_token)
        third = await push(d, "core", second_token)
        return first, second, third

    first, second, third = asyncio.run(go())
    assert first.status == 200
    assert ids(first, "changedIDs") == ["copy file", "write a file"]
    assert second.status == 200
    assert ids(second, "changedIDs") == ["hello"]
    assert ids(second, "removedIDs") == ["write a file", "copy file"]
    assert not a.exists() and not b.exists() and c.exists()
    assert third.status == 200
    assert ids(third, "changedIDs") == [] and ids(third, "removedIDs") == []


def test_refused_pushes_are_404_with_no_body_and_run_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    cfg = make_config(
        tmp_path, {"core": {"allowPush": True}, "closed": {"verifyKeys": [RIGHT_PUB]}}
    )

    async def go() -> list[PushReply]:
        d = Daemon(cfg)
        await d.load()
        good = await sign(cfg, [file_cmd("m", marker)])
        wrong = await sign(cfg, [file_cmd("m", marker)], key=WRONG_PRIV)
        return [
            await push(d, "core", wrong),
            await push(d, "nosuch", good),
            await push(d, "closed", good),
            await push(d, "core", "not a jwt"),
        ]

    replies = asyncio.run(go())
    assert [r.status for r in replies] == [404, 404, 404, 404]
    assert all(r.body is None for r in replies)
    assert not marker.exists()
    assert not (tmp_path / "state" / "core.jwt").exists()


def test_state_is_saved_0600_only_after_a_successful_run(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})
    state = tmp_path / "state" / "core.jwt"

    async def go() -> tuple[PushReply, PushReply, str]:
        d = Daemon(cfg)
        await d.load()
        bad = await push(
            d, "core", await sign(cfg, [{"id": "boom", "always": True, "change": "exit 3"}])
        )
        assert not state.exists()
        token = await sign(cfg, [file_cmd("ok", tmp_path / "ok")])
        good = await push(d, "core", token)
        return bad, good, token

    bad, good, token = asyncio.run(go())
    assert bad.status == 500
    assert bad.body is not None and bad.body["err"]
    assert ids(bad, "changedIDs") == ["boom"]  # SPEC 20: a failed run still reports
    assert good.status == 200
    assert state.read_text().strip() == token
    assert stat.S_IMODE(state.stat().st_mode) == 0o600


def test_check_request_changes_nothing_and_saves_nothing(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})
    state = tmp_path / "state" / "core.jwt"

    async def go() -> tuple[PushReply, PushReply, str]:
        d = Daemon(cfg)
        await d.load()
        first = await sign(cfg, [file_cmd("a", a)])
        await push(d, "core", first)
        a.unlink()  # drift
        checked = await push(d, "core", await sign(cfg, [file_cmd("b", b)]), check=True)
        after = await push(d, "core", first, check=True)
        return checked, after, first

    checked, after, first = asyncio.run(go())
    assert checked.status == 200
    assert ids(checked, "changedIDs") == ["b"]
    assert ids(checked, "removedIDs") == []  # a is absent: its check fails, nothing to remove
    assert checked.body is not None and checked.body["changedOutputs"] is None
    assert not a.exists() and not b.exists()
    assert state.read_text().strip() == first
    assert ids(after, "changedIDs") == ["a"]  # still diffed against the first pattern


def test_check_only_source_reports_drift_without_changing(tmp_path: Path) -> None:
    present, missing = tmp_path / "present", tmp_path / "missing"
    present.touch()
    cfg = make_config(tmp_path, {"audit": {"allowPush": True, "checkOnly": True}})

    async def go() -> PushReply:
        d = Daemon(cfg)
        await d.load()
        return await push(
            d,
            "audit",
            await sign(cfg, [file_cmd("present", present), file_cmd("missing", missing)]),
        )

    reply = asyncio.run(go())
    assert reply.status == 200
    assert ids(reply, "changedIDs") == ["missing"]
    assert not missing.exists()
    assert not (tmp_path / "state" / "audit.jwt").exists()  # check mode saves no state


def test_no_remove_keeps_what_a_new_pattern_dropped(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    cfg = make_config(tmp_path, {"core": {"allowPush": True, "noRemove": True}})

    async def go() -> PushReply:
        d = Daemon(cfg)
        await d.load()
        await push(d, "core", await sign(cfg, [file_cmd("a", a)]))
        return await push(d, "core", await sign(cfg, [file_cmd("b", b)]))

    reply = asyncio.run(go())
    assert ids(reply, "removedIDs") == []
    assert a.exists() and b.exists()


def test_trigger_only_source_stores_the_token_but_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    cfg = make_config(tmp_path, {"t": {"allowPush": True, "triggerOnly": True}})

    async def go() -> tuple[PushReply, Daemon]:
        d = Daemon(cfg)
        await d.load()
        return await push(d, "t", await sign(cfg, [file_cmd("m", marker)])), d

    reply, d = asyncio.run(go())
    assert reply.status == 200
    assert not marker.exists()
    assert (tmp_path / "state" / "t.jwt").exists()
    stored = d.stored_pattern("t")
    assert stored is not None and [c.id for c in stored.run] == ["m"]


def test_no_restore_source_writes_no_state_and_restores_none(tmp_path: Path) -> None:
    marker = tmp_path / "m"
    cfg = make_config(tmp_path, {"core": {"allowPush": True, "noRestore": True}})
    (tmp_path / "state").mkdir()

    async def go() -> PushReply:
        d = Daemon(cfg)
        await d.load()
        return await push(d, "core", await sign(cfg, [file_cmd("m", marker)]))

    assert asyncio.run(go()).status == 200
    assert marker.exists()
    audit = {"audit", "audit.key"}  # the audit log is not source state
    assert [p for p in (tmp_path / "state").iterdir() if p.name not in audit] == []


def test_filter_restricts_the_run_to_matching_parent_ids(tmp_path: Path) -> None:
    a = tmp_path / "a"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})

    async def go() -> PushReply:
        import re

        d = Daemon(cfg)
        await d.load()
        token = await sign(cfg, [file_cmd("a", a)])
        return reply_for(
            await d.handle_push(
                "core", token, check=False, parent_id_filter=re.compile("^nomatch$"), remote="t"
            )
        )

    reply = asyncio.run(go())
    assert reply.status == 200
    assert ids(reply, "changedIDs") == []
    assert not a.exists()


def test_timeout_push_bounds_a_run(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}}, run={"timeoutPush": "1s"})

    async def go() -> tuple[PushReply, float]:
        d = Daemon(cfg)
        await d.load()
        token = await sign(cfg, [{"id": "slow", "always": True, "change": "sleep 20"}])
        start = time.monotonic()
        reply = await push(d, "core", token)
        return reply, time.monotonic() - start

    reply, took = asyncio.run(go())
    assert reply.status == 500
    assert reply.body is not None and "timeoutPush" in reply.body["err"]
    assert took < 10
    assert not (tmp_path / "state" / "core.jwt").exists()


# ---------------------------------------------------------------------------- locks


def _slow_cmd(cid: str, log: Path) -> dict[str, Any]:
    return {
        "id": cid,
        "always": True,
        "change": f"echo start {cid} $(date +%s.%N) >> {log}; sleep 0.6; "
        f"echo end {cid} $(date +%s.%N) >> {log}",
    }


def _intervals(log: Path) -> dict[str, tuple[float, float]]:
    spans: dict[str, list[float]] = {}
    for line in log.read_text().splitlines():
        _, cid, ts = line.split()
        spans.setdefault(cid, []).append(float(ts))
    return {k: (v[0], v[1]) for k, v in spans.items()}


@pytest.mark.parametrize("run_multi", [False, True])
def test_concurrent_pushes_queue_unless_run_multi(tmp_path: Path, run_multi: bool) -> None:
    log = tmp_path / "log"
    cfg = make_config(tmp_path, {"core": {"allowPush": True, "runMulti": run_multi}})

    async def go() -> list[PushReply]:
        d = Daemon(cfg)
        await d.load()
        t1 = await sign(cfg, [_slow_cmd("one", log)])
        t2 = await sign(cfg, [_slow_cmd("two", log)])
        return list(await asyncio.gather(push(d, "core", t1), push(d, "core", t2)))

    replies = asyncio.run(go())
    assert [r.status for r in replies] == [200, 200]
    spans = _intervals(log)
    assert set(spans) == {"one", "two"}  # neither run was lost
    (_s1, e1), (s2, _e2) = sorted(spans.values())
    overlapped = s2 < e1
    assert overlapped is run_multi


# ---------------------------------------------------------------------------- start-up, restore


def test_restart_restores_the_cached_token_and_corrects_drift(tmp_path: Path) -> None:
    a = tmp_path / "a"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})

    async def first() -> None:
        d = Daemon(cfg)
        await d.load()
        assert (await push(d, "core", await sign(cfg, [file_cmd("a", a)]))).status == 200

    async def second() -> dict[str, Any]:
        d = Daemon(cfg)
        await d.load()
        assert d.stored_token("core") is not None
        results = await d.init_runs()
        return {k: v.changed_ids for k, v in results.items()}

    asyncio.run(first())
    a.unlink()
    assert asyncio.run(second()) == {"core": ("a",)}
    assert a.exists()


def test_cached_token_that_no_longer_verifies_is_not_run(tmp_path: Path) -> None:
    a = tmp_path / "a"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})

    async def first() -> None:
        d = Daemon(cfg)
        await d.load()
        await push(d, "core", await sign(cfg, [file_cmd("a", a)]))

    async def restart(c: Config) -> tuple[Any, Any]:
        d = Daemon(c)
        await d.load()
        results = await d.init_runs()
        return d.stored_token("core"), results["core"]

    asyncio.run(first())
    a.unlink()
    rotated = make_config(tmp_path, {"core": {"allowPush": True}}, verify_keys=(WRONG_PUB,))
    token, result = asyncio.run(restart(rotated))
    assert token is None
    assert result.err == "" and result.changed_ids == ()
    assert not a.exists()


def test_cached_token_replaces_static_commands_and_trigger_only_skips_start_run(
    tmp_path: Path,
) -> None:
    log = tmp_path / "log"

    def static(name: str) -> list[dict[str, Any]]:
        return [{"id": name, "always": True, "change": f"echo {name} >> {log}"}]

    sources = {
        "c": {"commands": static("c")},
        "a": {"commands": static("a")},
        "b": {"commands": static("b"), "allowPush": True},
        "z": {"commands": static("z"), "triggerOnly": True},
    }
    cfg = make_config(tmp_path, sources)

    async def seed() -> None:
        d = Daemon(cfg)
        await d.load()
        await push(
            d,
            "b",
            await sign(
                cfg, [{"id": "cached", "always": True, "change": f"echo cached-b >> {log}"}]
            ),
        )

    async def start() -> dict[str, Any]:
        d = Daemon(cfg)
        await d.load()
        return {k: v.changed_ids for k, v in (await d.init_runs()).items()}

    asyncio.run(seed())
    log.unlink()
    changed = asyncio.run(start())
    assert log.read_text().split() == ["a", "cached-b", "c"]
    assert changed == {"a": ("a",), "b": ("cached",), "c": ("c",), "z": ()}


def test_run_once_exit_codes(tmp_path: Path) -> None:
    ok = make_config(
        tmp_path, {"s": {"commands": [{"id": "ok", "always": True, "change": "true"}]}}
    )
    bad = make_config(
        tmp_path,
        {
            "s": {"commands": [{"id": "ok", "always": True, "change": "true"}]},
            "t": {"commands": [{"id": "no", "always": True, "change": "exit 1"}]},
        },
    )
    unreachable = make_config(tmp_path, {"p": {"pullPaths": [str(tmp_path / "missing.jwt")]}})
    assert asyncio.run(Daemon(ok).run_once()) == 0
    assert asyncio.run(Daemon(bad).run_once()) == 1
    assert asyncio.run(Daemon(unreachable).run_once()) == 1


# ---------------------------------------------------------------------------- pull


def _claims_token(files: Mapping[str, str], *, version: str, manifest: str = "", iat: float) -> str:
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files=files,
        build_manifest=manifest,
        run_vars={},
        version=version,
        now=iat,
    )
    return sign_token(claims, parse_signing_key(RIGHT_PRIV))


def test_same_pattern_compares_manifest_files_and_version_not_run_vars() -> None:
    keys = [__import__("agent.jws.keys", fromlist=["x"]).parse_verify_key(RIGHT_PUB)]
    now = time.time()
    files = {"/main.jsonnet": "{run: []}"}
    base = verify_token(_claims_token(files, version="v1", iat=now), keys)
    later = verify_token(_claims_token(files, version="v1", iat=now + 5), keys)
    other_version = verify_token(_claims_token(files, version="v2", iat=now), keys)
    other_manifest = verify_token(_claims_token(files, version="v1", manifest="m\n", iat=now), keys)
    other_files = verify_token(_claims_token({"/main.jsonnet": "{}"}, version="v1", iat=now), keys)
    assert same_pattern(base, later, ignore_version=False)
    assert not same_pattern(base, other_version, ignore_version=False)
    assert same_pattern(base, other_version, ignore_version=True)
    assert not same_pattern(base, other_manifest, ignore_version=True)
    assert not same_pattern(base, other_files, ignore_version=True)


def test_pull_from_file_replaces_the_token_only_when_the_pattern_changes(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    jwt = tmp_path / "pull.jwt"
    cfg = make_config(tmp_path, {"p": {"pullPaths": [str(tmp_path / "absent.jwt"), str(jwt)]}})

    async def go() -> None:
        d = Daemon(cfg)
        await d.load()
        first = await sign(cfg, [file_cmd("a", a)])
        jwt.write_text(first)
        assert (await d.run_source("p", init=True)).changed_ids == ("a",)
        stored = d.stored_token("p")
        assert stored is not None and stored.raw == first
        await asyncio.sleep(1.1)  # a later iat: a different token with the same pattern
        second = await sign(cfg, [file_cmd("a", a)])
        jwt.write_text(second)
        a.unlink()
        assert (await d.run_source("p")).changed_ids == ("a",)  # drift corrected
        stored = d.stored_token("p")
        # issue 17: the same pattern, re-signed, becomes the source's token (nothing new runs)
        assert stored is not None and stored.raw == second
        assert (tmp_path / "state" / "p.jwt").read_text().strip() == second
        new = await sign(cfg, [file_cmd("b", b)])
        jwt.write_text(new)
        result = await d.run_source("p")
        assert result.changed_ids == ("b",) and result.removed_ids == ("a",)
        stored = d.stored_token("p")
        assert stored is not None and stored.raw == new
        jwt.unlink()  # every path unreachable: the stored token is used
        b.unlink()
        assert (await d.run_source("p")).changed_ids == ("b",)

    asyncio.run(go())
    assert (tmp_path / "state" / "p.jwt").read_text().strip() != ""


@asynccontextmanager
async def etag_server(state: dict[str, Any]) -> AsyncIterator[str]:
    async def handler(request: web.Request) -> web.StreamResponse:
        state["requests"].append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == state["etag"]:
            return web.Response(status=304, headers={"ETag": state["etag"]})
        return web.Response(text=state["body"], headers={"ETag": state["etag"]})

    app = web.Application()
    app.router.add_get("/pattern.jwt", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}/pattern.jwt"
    finally:
        await runner.cleanup()


def test_pull_over_http_uses_etag_and_a_304_skips_download_and_verification(
    tmp_path: Path,
) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    verified = tmp_path / "verified"
    verify_cmds = [
        {
            "id": "verify",
            "always": True,
            "change": f'echo x >> {verified}; printf %s "$ETCHA_JWT"',
            "onChange": ["etcha:jwt"],
        }
    ]
    state: dict[str, Any] = {"requests": [], "etag": '"v1"', "body": ""}

    async def go() -> None:
        async with etag_server(state) as url:
            cfg = make_config(
                tmp_path,
                {"p": {"pullPaths": [url], "verifyCommands": verify_cmds}},
                verify_keys=(),
            )
            state["body"] = await sign(cfg, [file_cmd("a", a)])
            d = Daemon(cfg)
            await d.load()
            assert (await d.run_source("p", init=True)).changed_ids == ("a",)
            assert len(verified.read_text().splitlines()) == 1
            a.unlink()
            assert (await d.run_source("p")).changed_ids == ("a",)  # 304, drift corrected
            assert state["requests"] == [None, '"v1"']
            # The 304 brought no body to verify; the one extra verify-command run is the stored
            # token's re-admission before its pattern runs again (SPEC 31).
            assert len(verified.read_text().splitlines()) == 2
            meta = json.loads((tmp_path / "state" / "p.meta.json").read_text())
            assert meta["etag"] == '"v1"'
            state["body"], state["etag"] = await sign(cfg, [file_cmd("b", b)]), '"v2"'
            result = await d.run_source("p")
            assert result.changed_ids == ("b",) and result.removed_ids == ("a",)
            assert state["requests"][-1] == '"v1"'
            assert len(verified.read_text().splitlines()) == 3  # the new body was verified
            stored = d.stored_token("p")
            assert stored is not None and stored.raw == state["body"]

    asyncio.run(go())
    meta = json.loads((tmp_path / "state" / "p.meta.json").read_text())
    assert meta["etag"] == '"v2"'


def test_unreachable_http_path_falls_back_to_the_stored_token(tmp_path: Path) -> None:
    a = tmp_path / "a"
    cfg = make_config(
        tmp_path, {"p": {"allowPush": True, "pullPaths": [f"http://127.0.0.1:{free_port()}/x"]}}
    )

    async def go() -> tuple[Any, Any]:
        d = Daemon(cfg)
        await d.load()
        await push(d, "p", await sign(cfg, [file_cmd("a", a)]))
        a.unlink()
        return await d.run_source("p"), d.stored_token("p")

    result, stored = asyncio.run(go())
    assert result.err == "" and result.changed_ids == ("a",)
    assert stored is not None
    assert a.exists()


def test_state_files_are_private(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})

    async def go() -> None:
        d = Daemon(cfg)
        await d.load()
        await push(d, "core", await sign(cfg, [file_cmd("a", tmp_path / "a")]))

    asyncio.run(go())
    for path in (tmp_path / "state").iterdir():
        private = 0o700 if path.is_dir() else 0o600  # the audit log's directory
        assert stat.S_IMODE(os.stat(path).st_mode) == private, path


def test_reload_applies_new_keys_adds_and_removes_sources_keeping_state(tmp_path: Path) -> None:
    a, s = tmp_path / "a", tmp_path / "static"
    cfg = make_config(tmp_path, {"core": {"allowPush": True}, "gone": {"commands": []}})
    static = [{"id": "s", "check": f"test -f {s}", "change": f"touch {s}"}]
    fresh = make_config(
        tmp_path,
        {"core": {"allowPush": True}, "new": {"commands": static}},
        verify_keys=(WRONG_PUB,),
    )

    async def go() -> tuple[list[str], PushReply, Any]:
        d = Daemon(cfg)
        await d.load()
        await push(d, "core", await sign(cfg, [file_cmd("a", a)]))
        changed = await d.reload(fresh)
        refused = await push(d, "core", await sign(cfg, [file_cmd("a", a)]))
        return changed, refused, d

    changed, refused, d = asyncio.run(go())
    assert "sources" in changed and "run" in changed
    assert refused.status == 404  # the old key is no longer trusted
    assert d.source_names == ["core", "new"]
    # Its key was removed: the stored token is withdrawn at the reload (SPEC 31); the state file
    # stays on disk. tests/unit/daemon/test_daemon_stored.py shows a kept key keeps the stored
    # token.
    assert d.stored_token("core") is None
    assert (tmp_path / "state" / "core.jwt").exists()
    assert s.exists()  # the added source was loaded and run


def test_reload_refuses_a_config_without_verifiers(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}})
    bad = make_config(tmp_path, {"core": {"allowPush": True}}, verify_keys=())

    async def go() -> Daemon:
        d = Daemon(cfg)
        await d.load()
        with pytest.raises(ConfigError):
            await d.reload(bad)
        return d

    assert asyncio.run(go()).config is cfg


def test_randomized_start_delay_waits_a_random_time_below_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = make_config(tmp_path, {}, run={"randomizedStartDelaySec": 1})
    bounds: list[int] = []

    def fake_randbelow(n: int) -> int:
        bounds.append(n)
        return 400  # ms

    monkeypatch.setattr("agent.daemon.schedule.secrets.randbelow", fake_randbelow)

    async def go() -> float:
        d = Daemon(cfg)
        start = time.monotonic()
        await d._start_delay()
        return time.monotonic() - start

    with caplog.at_level(logging.INFO, logger="agent.daemon"):
        waited = asyncio.run(go())
    assert bounds == [1000]  # drawn below randomizedStartDelaySec, in ms
    assert 0.35 <= waited < 1.0
    assert "Waiting 0.4s (run.randomizedStartDelaySec)" in caplog.text
