"""The status record and document: the summary line, the JSON, and the route behind the key."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
from support import config_doc, free_port

from agent.config.schema import config_from_dict
from agent.daemon.httpmw import app_extras
from agent.daemon.service import Daemon
from agent.daemon.status import LastRun, Refusal, status_document, summary_line
from agent.net.httpserver import start_server
from agent.run.engine import Output, Result, RunOutcome


def run(**kw: object) -> LastRun:
    base: dict[str, object] = {"time": 0.0, "trigger": "pull", "checks": 42, "duration": 0.18}
    base.update(kw)
    return LastRun(**base)  # type: ignore[arg-type]


def test_summary_line_of_a_no_op_run() -> None:
    assert summary_line("web", run()) == "Source web: 42 checks, no changes [180ms]"
    assert summary_line("web", run(checks=1)) == "Source web: 1 check, no changes [180ms]"


def test_summary_line_counts_changes_removals_and_failures() -> None:
    line = summary_line("web", run(changed_ids=("a", "b"), removed_ids=("c",), duration=1.5))
    assert line == "Source web: 42 checks, 2 changed, 1 removed [1.5s]"
    failed = summary_line("web", run(changed_ids=("a",), failed_ids=("a",), err="x"))
    assert failed == "Source web: 42 checks, 1 changed, 1 failed [180ms]"
    assert summary_line("web", run(check=True, changed_ids=("a",))).startswith(
        "Source web: 42 checks, 1 would change"
    )


def test_last_run_counts_checks_and_failed_ids_from_the_outcome() -> None:
    outs = (
        Output(id="ok", checked=True),
        Output(id="bad", checked=True, changed=True, change_fail=True),
        Output(id="always", changed=True),
    )
    result = Result(changed_ids=("bad", "always"), err="bad failed")
    last = LastRun.of(
        result, RunOutcome(outputs=outs), trigger="push", duration=0.01, check=False, now=0
    )
    assert (last.checks, last.failed_ids, last.changed_ids) == (2, ("bad",), ("bad", "always"))
    assert last.to_json()["time"] == "1970-01-01T00:00:00Z"


def test_status_document_lists_every_source(tmp_path: Path) -> None:
    cfg = config_from_dict(config_doc(tmp_path, {"a": {}, "b": {"allowPush": True}}))
    d = Daemon(cfg)
    d.sources["b"].last_refusal = Refusal(time=60.0, trigger="push", reason="signature")
    doc = status_document(d.sources, lambda name: 120.0 if name == "a" else None, now=0)
    assert doc["time"] == "1970-01-01T00:00:00Z"
    assert doc["sources"]["a"] == {
        "pattern": None,
        "lastRun": None,
        "nextRun": "1970-01-01T00:02:00Z",
        "lastRefusal": None,
        "stale": False,
    }
    assert doc["sources"]["b"]["lastRefusal"] == {
        "time": "1970-01-01T00:01:00Z",
        "trigger": "push",
        "reason": "signature",
    }


async def _status_code(tmp: Path, key: str, headers: dict[str, str]) -> int:
    from agent.daemon.server import create_app

    cfg = config_from_dict(config_doc(tmp, {"web": {}}, run={"systemMetricsKey": key}))
    d = Daemon(cfg)
    app = create_app(d.ingress, **app_extras(d, None, d.status))
    port = free_port()
    runner = await start_server(app, "127.0.0.1", port)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/etcha/v1/system/status", headers=headers) as resp,
        ):
            return resp.status
    finally:
        await runner.cleanup()


def test_status_route_exists_only_with_a_metrics_key(tmp_path: Path) -> None:
    auth = {"Authorization": "Bearer k"}
    assert asyncio.run(_status_code(tmp_path, "", auth)) == 404
    assert asyncio.run(_status_code(tmp_path, "k", auth)) == 200
    assert asyncio.run(_status_code(tmp_path, "k", {})) == 401
