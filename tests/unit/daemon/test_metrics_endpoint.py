"""The metrics endpoint and what the daemon records, scraped over HTTP from a real listener.

The exposition is parsed with prometheus_client's text parser and the counts are checked after a
known sequence of pushes, pulls, event and webhook runs.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families
from support import RIGHT_PRIV, WRONG_PRIV, config_doc, free_port

from agent.config.schema import Config, config_from_dict
from agent.daemon.events import Events
from agent.daemon.httpmw import app_extras
from agent.daemon.metrics import Metrics
from agent.daemon.service import Daemon
from agent.net.httpserver import start_server
from agent.pattern.load import load_from_text
from agent.tools.build import build_token

KEY = "metrics-key"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def make_config(tmp: Path, sources: Mapping[str, Any], **run: Any) -> Config:
    return config_from_dict(config_doc(tmp, sources, run=run))


@asynccontextmanager
async def listener(cfg: Config, metrics: Metrics) -> AsyncIterator[tuple[Daemon, str]]:
    from agent.daemon.server import create_app

    d = Daemon(cfg, events=Events(), metrics=metrics)
    await d.load()
    app = create_app(
        d.ingress, max_body_bytes=int(cfg.run.max_body_bytes), **app_extras(d, d.exposition)
    )
    port = free_port()
    runner = await start_server(app, "127.0.0.1", port)
    try:
        yield d, f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


async def sign(
    cfg: Config, run: list[dict[str, Any]], *, key: str = RIGHT_PRIV, **extra: Any
) -> str:
    signer = config_from_dict({"build": {"signingKey": key}})
    loaded = load_from_text(json.dumps({"run": run, **extra}), config=cfg, source="")
    return await build_token(loaded, config=signer)


async def post(url: str, body: bytes) -> int:
    async with aiohttp.ClientSession() as s, s.post(url, data=body) as r:
        await r.read()
        return r.status


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(samples: Samples, metric: str, **labels: str) -> float:
    """The sum of the samples of ``metric`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == metric and want <= ls)


def file_cmd(cid: str, path: Path) -> dict[str, Any]:
    return {"id": cid, "check": f"test -f {path}", "change": f"touch {path}"}


def test_endpoint_is_off_without_a_key_and_401_for_a_wrong_or_missing_key(tmp_path: Path) -> None:
    async def go() -> list[int]:
        out = []
        async with listener(make_config(tmp_path, {}), Metrics(process_metrics=False)) as (_, b):
            out.append((await get(b + "/etcha/v1/system/metrics?key="))[0])
        cfg = make_config(tmp_path, {}, systemMetricsKey=KEY)
        async with listener(cfg, Metrics(process_metrics=False)) as (_, b):
            out.append((await get(b + "/etcha/v1/system/metrics"))[0])
            out.append((await get(b + "/etcha/v1/system/metrics?key=wrong"))[0])
            out.append((await get(b + f"/etcha/v1/system/metrics?key={KEY}"))[0])
        return out

    assert asyncio.run(go()) == [404, 401, 401, 200]


def test_systemmetricssecret_alias_enables_the_endpoint(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {}, systemMetricsSecret="old-name")

    async def go() -> int:
        async with listener(cfg, Metrics(process_metrics=False)) as (_, b):
            return (await get(b + "/etcha/v1/system/metrics?key=old-name"))[0]

    assert asyncio.run(go()) == 200


def test_counts_after_a_known_sequence_of_runs(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    token_file = tmp_path / "pulled.jwt"
    cfg = make_config(
        tmp_path,
        {
            "core": {"allowPush": True, "eventsSend": ".*"},
            "handler": {
                "triggerOnly": True,
                "eventsReceive": ["go"],
                "webhookPaths": ["/hook"],
                "commands": [
                    {
                        "id": "h",
                        "always": True,
                        "change": "echo hi",
                        "onChange": ["etcha:webhookBody"],
                    }
                ],
            },
            "puller": {"pullPaths": [str(token_file)]},
        },
        systemMetricsKey=KEY,
    )
    exp = int(time.time()) + 3600

    async def go() -> tuple[Samples, str]:
        async with listener(cfg, Metrics()) as (d, base):
            push = base + "/etcha/v1/push/core"
            # 1: drift on a and b, both changed, event "go" fired to handler
            two = [file_cmd("a", a), file_cmd("b", b)]
            two[1] = {**two[1], "onChange": ["etcha:go"]}
            assert await post(push, (await sign(cfg, two, expiresIn="1h")).encode()) == 200
            # 2: same pattern again: no drift
            assert await post(push, (await sign(cfg, two, expiresIn="1h")).encode()) == 200
            # 3: check-mode push after a disappears: drift on a, nothing changed
            a.unlink()
            assert await post(push + "?check=true", (await sign(cfg, two)).encode()) == 200
            # 4: a failing command
            fail = [{"id": "boom", "always": True, "change": "exit 2"}]
            assert await post(push, (await sign(cfg, fail)).encode()) == 500
            # refusals: unparseable body, unknown key
            assert await post(push, b"{not a jwt") == 404
            assert await post(push, (await sign(cfg, two, key=WRONG_PRIV)).encode()) == 404
            # refusals before verification: a source without allowPush, an unknown source
            no_push = base + "/etcha/v1/push/handler"
            assert await post(no_push, (await sign(cfg, two)).encode()) == 404
            assert await post(base + "/etcha/v1/push/nope", (await sign(cfg, two)).encode()) == 404
            # a webhook run
            assert await get(base + "/hook") == (200, "hi\n")
            # pulls: fetched, not_modified, error
            token_file.write_text(await sign(cfg, [{"id": "p", "always": True, "change": "true"}]))
            await d.run_source("puller")
            await d.run_source("puller")
            token_file.unlink()
            await d.run_source("puller")
            status, text = await get(base + f"/etcha/v1/system/metrics?key={KEY}")
            assert status == 200
            return parse(text), text

    samples, text = asyncio.run(go())
    sources = "etcha_sources_total"
    push = {
        "name": "core",
        "trigger": "push",
        "public_key": "reqYEklgP4",
        "remote_addr": "127.0.0.1",
    }
    # exactly one per source run: 3 successful (incl. the check run) + 1 failed
    assert value(samples, sources, error="0", **push) == 3.0
    assert value(samples, sources, error="1", **push) == 1.0
    assert value(samples, sources, name="handler", trigger="event", error="0") == 1.0
    assert value(samples, sources, name="handler", trigger="webhook", error="0") == 1.0
    assert value(samples, sources, name="puller", trigger="pull") == 3.0
    cmds = "etcha_commands_total"
    # check error=1 means drift: a drifted in runs 1 and 3, b only in run 1
    assert value(samples, cmds, id="a", mode="check", error="1", source="core") == 2.0
    assert value(samples, cmds, id="a", mode="check", error="0", source="core") == 1.0
    assert value(samples, cmds, id="b", mode="check", error="1") == 1.0
    assert value(samples, cmds, id="b", mode="check", error="0") == 2.0
    assert value(samples, cmds, id="a", mode="change", error="0", parentID="core") == 1.0
    assert value(samples, cmds, id="boom", mode="change", error="1") == 1.0
    assert value(samples, cmds, id="h", mode="change", source="handler") == 2.0
    assert value(samples, "etcha_sources_commands", name="core", trigger="push", mode="change") == 0
    verify = "agent_verify_failures_total"
    assert value(samples, verify, source="core", reason="malformed") == 1.0
    assert value(samples, verify, source="core", reason="no_match") == 1.0
    assert value(samples, verify, source="handler", reason="not_allowed") == 1.0
    assert value(samples, verify, source="", reason="not_allowed") == 1.0  # no client labels
    pulls = "agent_pull_total"
    for result in ("fetched", "not_modified", "error"):
        assert value(samples, pulls, source="puller", result=result) == 1.0
    # the last accepted core token (run 2's; run 4 failed, run 3 was a check) expires in 1h
    left = value(samples, "agent_pattern_expires_in_seconds", source="core")
    assert 3500 < left <= exp - time.time() + 5
    # puller's token has no exp: no series
    assert not [
        k
        for k in samples
        if k[0] == "agent_pattern_expires_in_seconds" and ("source", "puller") in k[1]
    ]
    assert "process_cpu_seconds_total" in text
    assert "_created" not in text


def test_pattern_expiry_gauge_follows_the_accepted_token(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"core": {"allowPush": True}}, systemMetricsKey=KEY)

    async def go() -> Samples:
        async with listener(cfg, Metrics(process_metrics=False)) as (_, base):
            token = await sign(cfg, [{"id": "x", "always": True, "change": "true"}], expiresIn="1h")
            assert await post(base + "/etcha/v1/push/core", token.encode()) == 200
            return parse((await get(base + f"/etcha/v1/system/metrics?key={KEY}"))[1])

    samples = asyncio.run(go())
    left = value(samples, "agent_pattern_expires_in_seconds", source="core")
    assert 3500 < left <= 3600
