"""Webhooks: a real listener (agent.net.httpserver) on 127.0.0.1 built like `agent run` builds
it (app_extras).

Sources run real shell commands; tokens are signed with the interop key reqYEklgP4.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import RIGHT_PRIV, config_doc, free_port

from agent.config.schema import Config, config_from_dict
from agent.core.errors import ConfigError
from agent.daemon.events import Events
from agent.daemon.httpmw import app_extras
from agent.daemon.metrics import Metrics
from agent.daemon.server import create_app
from agent.daemon.service import Daemon
from agent.daemon.webhooks import canonical_header, check_webhook_paths, headers_text, query_text
from agent.net.httpserver import start_server
from agent.pattern.load import load_from_text
from agent.tools.build import build_token

#: A command answering with the webhook env as JSON.
ENV_JSON = (
    "python3 -c 'import json, os; print(json.dumps({k: v for k, v in os.environ.items() "
    'if k.startswith("ETCHA_")}))\''
)


def answer(cid: str, script: str, content_type: str | None = None) -> list[dict[str, Any]]:
    cmds: list[dict[str, Any]] = [
        {"id": cid, "always": True, "change": script, "onChange": ["etcha:webhookBody"]}
    ]
    if content_type is not None:
        cmds.append(
            {
                "id": cid + " type",
                "always": True,
                "change": f"echo '  {content_type}  '",
                "onChange": ["etcha:webhookContentType"],
            }
        )
    return cmds


def make_config(tmp: Path, sources: Mapping[str, Any], **run: Any) -> Config:
    return config_from_dict(config_doc(tmp, sources, run=run))


@asynccontextmanager
async def listener(cfg: Config) -> AsyncIterator[tuple[Daemon, str]]:
    d = Daemon(cfg, events=Events(), metrics=Metrics(process_metrics=False))
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


async def call(
    method: str, url: str, *, data: bytes = b"", headers: Mapping[str, str] | None = None
) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, url, data=data, headers=headers or {}) as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


def test_webhook_env_and_answer_with_trimmed_content_type(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "hook": {
                "webhookPaths": ["/hook"],
                "commands": answer("env", ENV_JSON, "application/json"),
            }
        },
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call(
                "PUT",
                base + "/hook?z=1&a=b%20c&a=0",
                data=b"\x00binary\xff",
                headers={"x-my-header": "hello", "X-Other": "two"},
            )

    status, ctype, body = asyncio.run(go())
    assert status == 200
    assert ctype == "application/json"
    env = json.loads(body)
    assert env["ETCHA_SOURCE_NAME"] == "hook"
    assert env["ETCHA_SOURCE_TRIGGER"] == "webhook"
    assert env["ETCHA_WEBHOOK_METHOD"] == "PUT"
    assert env["ETCHA_WEBHOOK_PATH"] == "/hook"
    assert env["ETCHA_WEBHOOK_QUERY"] == "a=b+c&a=0&z=1"
    assert env["ETCHA_WEBHOOK_BODY"] == "AGJpbmFyef8="
    lines = env["ETCHA_WEBHOOK_HEADERS"].split("\n")
    assert lines == sorted(lines)
    assert "X-My-Header: hello" in lines and "X-Other: two" in lines
    assert not any(line.startswith("Host:") for line in lines)


@pytest.mark.parametrize("method", ["GET", "POST", "DELETE", "PATCH"])
def test_webhooks_accept_any_method(tmp_path: Path, method: str) -> None:
    cfg = make_config(
        tmp_path,
        {"hook": {"webhookPaths": ["/any"], "commands": answer("m", "echo $ETCHA_WEBHOOK_METHOD")}},
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call(method, base + "/any")

    status, ctype, body = asyncio.run(go())
    assert (status, body) == (200, method + "\n")
    assert ctype == "text/plain; charset=utf-8"


def test_sources_sharing_a_path_are_tried_alphabetically_first_answer_wins(
    tmp_path: Path,
) -> None:
    cfg = make_config(
        tmp_path,
        {
            # a: runs but emits no webhookBody; b: fails; c: answers; d: never tried
            "a": {
                "webhookPaths": ["/shared"],
                "commands": [{"id": "x", "always": True, "change": "echo a >> $LOG"}],
                "exec": {"env": {"LOG": str(tmp_path / "log")}},
            },
            "b": {
                "webhookPaths": ["/shared"],
                "commands": [
                    *answer("b", "echo b >> $LOG; echo from-b"),
                    {"id": "fail", "always": True, "change": "exit 1"},
                ],
                "exec": {"env": {"LOG": str(tmp_path / "log")}},
            },
            "c": {"webhookPaths": ["/shared"], "commands": answer("c", "echo from-c")},
            "d": {"webhookPaths": ["/shared"], "commands": answer("d", "touch $LOG.d")},
        },
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call("POST", base + "/shared")

    status, _, body = asyncio.run(go())
    assert (status, body) == (200, "from-c\n")
    assert (tmp_path / "log").read_text() == "a\nb\n"
    assert not (tmp_path / "log.d").exists()


def test_no_answer_unknown_path_and_no_pattern_are_404_page_not_found(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "silent": {
                "webhookPaths": ["/silent"],
                "commands": [{"id": "x", "always": True, "change": "true"}],
            },
            "empty": {"webhookPaths": ["/empty"]},
        },
    )

    async def go() -> list[tuple[int, str, str]]:
        async with listener(cfg) as (_d, base):
            return [
                await call("GET", base + "/silent"),
                await call("GET", base + "/empty"),
                await call("GET", base + "/unknown"),
            ]

    for status, _, body in asyncio.run(go()):
        assert (status, body) == (404, "404 page not found")


def test_webhook_uses_the_last_accepted_pattern_over_static_commands(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "hook": {
                "allowPush": True,
                "triggerOnly": True,
                "webhookPaths": ["/p"],
                "commands": answer("static", "echo static"),
            }
        },
    )

    async def go() -> tuple[str, str]:
        async with listener(cfg) as (_d, base):
            before = (await call("GET", base + "/p"))[2]
            signer = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
            loaded = load_from_text(
                json.dumps({"run": answer("pushed", "echo pushed")}), config=cfg, source=""
            )
            token = await build_token(loaded, config=signer)
            async with (
                aiohttp.ClientSession() as s,
                s.post(base + "/etcha/v1/push/hook", data=token.encode()) as r,
            ):
                assert r.status == 200
            return before, (await call("GET", base + "/p"))[2]

    assert asyncio.run(go()) == ("static\n", "pushed\n")


def test_webhook_runs_do_not_dispatch_events(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = make_config(
        tmp_path,
        {
            "hook": {
                "webhookPaths": ["/e"],
                "eventsSend": ".*",
                "commands": [
                    {
                        "id": "x",
                        "always": True,
                        "change": "echo ok",
                        "onChange": ["etcha:webhookBody", "etcha:ping"],
                    }
                ],
            },
            "recv": {
                "triggerOnly": True,
                "eventsReceive": ["ping", "webhookBody"],
                "commands": [{"id": "y", "always": True, "change": f"touch {log}"}],
            },
        },
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call("GET", base + "/e")

    assert asyncio.run(go())[2] == "ok\n"
    assert not log.exists()


def test_oversized_body_is_413_and_runs_nothing(tmp_path: Path) -> None:
    log = tmp_path / "log"
    cfg = make_config(
        tmp_path,
        {"hook": {"webhookPaths": ["/big"], "commands": answer("x", f"touch {log}")}},
        maxBodyBytes=64,
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call("POST", base + "/big", data=b"x" * 65)

    assert asyncio.run(go())[0] == 413
    assert not log.exists()


def test_timeout_webhook_stops_the_run_and_answers_404(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {"hook": {"webhookPaths": ["/slow"], "commands": answer("x", "sleep 20; echo late")}},
        timeoutWebhook="1s",
    )

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call("GET", base + "/slow")

    loop_start = asyncio.run(_timed(go))
    (status, _, body), elapsed = loop_start
    assert (status, body) == (404, "404 page not found")
    assert elapsed < 10


async def _timed(fn: Any) -> tuple[Any, float]:
    loop = asyncio.get_running_loop()
    start = loop.time()
    result = await fn()
    return result, loop.time() - start


def test_webhook_paths_under_etcha_are_refused(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path, {"ok": {"webhookPaths": ["/fine"]}, "x": {"webhookPaths": ["/etcha"]}}
    )
    with pytest.raises(ConfigError, match=r"sources\.x\.webhookPaths.*'/etcha'"):
        check_webhook_paths(cfg)
    check_webhook_paths(make_config(tmp_path, {"ok": {"webhookPaths": ["/fine"]}}))


def test_header_and_query_encoding_follow_go() -> None:
    assert canonical_header("x-my-header") == "X-My-Header"
    assert canonical_header("CONTENT-type") == "Content-Type"
    assert headers_text([("host", "h"), ("b", "2"), ("a", "1"), ("a", "0")]) == "A: 0\nA: 1\nB: 2"
    assert query_text([("b", "1"), ("a", "x y&z"), ("a", "é")]) == "a=x+y%26z&a=%C3%A9&b=1"
    assert query_text([]) == ""


def test_webhook_reply_is_the_command_output_untrimmed(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "hook": {"webhookPaths": ["/echo"], "commands": answer("e", "echo hook-body")},
            "pad": {"webhookPaths": ["/pad"], "commands": answer("p", "printf '  padded\\n\\n'")},
        },
    )

    async def go() -> list[str]:
        async with listener(cfg) as (_d, base):
            return [(await call("GET", base + p))[2] for p in ("/echo", "/pad")]

    assert asyncio.run(go()) == ["hook-body\n", "  padded\n\n"]


def test_webhook_body_file_holds_the_raw_body_and_is_removed_after_the_run(
    tmp_path: Path,
) -> None:
    seen = tmp_path / "seen"
    script = (
        f'echo "$ETCHA_WEBHOOK_BODY_FILE" > {seen}; '
        'stat -c %a "$ETCHA_WEBHOOK_BODY_FILE"; cat "$ETCHA_WEBHOOK_BODY_FILE"; echo; '
        'echo "$ETCHA_WEBHOOK_BODY"'
    )
    cfg = make_config(tmp_path, {"hook": {"webhookPaths": ["/f"], "commands": answer("f", script)}})

    async def go() -> tuple[int, str, str]:
        async with listener(cfg) as (_d, base):
            return await call("POST", base + "/f", data=b"small body")

    status, _, body = asyncio.run(go())
    assert status == 200
    assert body == "600\nsmall body\nc21hbGwgYm9keQ==\n"
    path = Path(seen.read_text().strip())
    assert path.name.startswith("agent-webhook-")
    assert not path.exists()


def test_webhook_body_over_64_kib_is_only_in_the_file(tmp_path: Path) -> None:
    script = 'echo "env=${#ETCHA_WEBHOOK_BODY}"; wc -c < "$ETCHA_WEBHOOK_BODY_FILE"'
    cfg = make_config(
        tmp_path, {"hook": {"webhookPaths": ["/big"], "commands": answer("b", script)}}
    )
    sizes = (64 * 1024, 64 * 1024 + 1, 200 * 1024)

    async def go() -> list[tuple[int, str, str]]:
        async with listener(cfg) as (_d, base):
            return [await call("POST", base + "/big", data=b"x" * n) for n in sizes]

    replies = asyncio.run(go())
    assert [r[0] for r in replies] == [200, 200, 200]
    # 64 KiB is still passed in the variable too (base64: 4 * ceil(n / 3) characters)
    assert replies[0][2] == f"env={4 * -(-64 * 1024 // 3)}\n{64 * 1024}\n"
    assert replies[1][2] == f"env=0\n{64 * 1024 + 1}\n"
    assert replies[2][2] == f"env=0\n{200 * 1024}\n"


def test_webhook_runs_beyond_webhook_max_concurrent_get_429(tmp_path: Path) -> None:
    go_file, started = tmp_path / "go", tmp_path / "started"
    started.mkdir()
    script = f"touch {started}/$$; while [ ! -e {go_file} ]; do sleep 0.05; done; echo done"
    cfg = make_config(
        tmp_path,
        {
            "hook": {"webhookPaths": ["/w"], "commands": answer("w", script)},
            "other": {"webhookPaths": ["/o"], "commands": answer("o", "echo other")},
        },
        webhookMaxConcurrent=2,
    )

    async def go() -> tuple[list[int], list[int], int, list[int]]:
        async with listener(cfg) as (_d, base):
            running = [asyncio.create_task(call("GET", base + "/w")) for _ in range(2)]
            while len(list(started.iterdir())) < 2:
                await asyncio.sleep(0.05)
            over = [(await call("GET", base + "/w"))[0] for _ in range(2)]
            other = (await call("GET", base + "/o"))[0]
            go_file.touch()
            first = [(await t)[0] for t in running]
            again = [(await call("GET", base + "/w"))[0]]
            return over, first, other, again

    over, first, other, again = asyncio.run(go())
    assert over == [429, 429]
    assert other == 200  # the limit is per source
    assert first == [200, 200]
    assert again == [200]
    assert len(list(started.iterdir())) == 3
