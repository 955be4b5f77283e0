"""Events between sources and the daemon's system events, driven in-process through real pushes.

A real :class:`Daemon` with :class:`Events`, real signed tokens (interop key reqYEklgP4), real
shell commands; receivers append their ``ETCHA_*`` env to a log file, one line per run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from support import RIGHT_PRIV, config_doc

from agent.config.schema import Config, config_from_dict
from agent.daemon.events import Events, event_output, receivers_for
from agent.daemon.server import PushReply, reply_for
from agent.daemon.service import Daemon
from agent.pattern.load import load_from_text
from agent.run.engine import Output
from agent.tools.build import build_token

LOG_LINE = (
    'echo "$ETCHA_SOURCE_NAME|$ETCHA_EVENT_NAME|$ETCHA_EVENT_ID|$ETCHA_EVENT_OUTPUT|'
    '$ETCHA_EVENT_PUBLIC_KEY|$ETCHA_EVENT_SRC|$ETCHA_SOURCE_TRIGGER" >> "$LOG"'
)


def make_config(tmp: Path, sources: Mapping[str, Any]) -> Config:
    return config_from_dict(config_doc(tmp, sources, exec={"env": {"LOG": str(tmp / "log")}}))


def receiver(events: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "triggerOnly": True,
        "eventsReceive": events,
        "commands": [{"id": "log", "always": True, "change": LOG_LINE}],
        **extra,
    }


def emit(cid: str, output: str, *events: str) -> dict[str, Any]:
    return {
        "id": cid,
        "always": True,
        "change": f"echo {output}",
        "onChange": [f"etcha:{e}" for e in events],
    }


async def sign(cfg: Config, run: list[dict[str, Any]], **pattern: Any) -> str:
    signer = config_from_dict({"build": {"signingKey": RIGHT_PRIV}})
    loaded = load_from_text(json.dumps({"run": run, **pattern}), config=cfg, source="")
    return await build_token(loaded, config=signer)


async def started(cfg: Config) -> Daemon:
    d = Daemon(cfg, events=Events())
    await d.load()
    return d


async def push(
    d: Daemon, source: str, run: list[dict[str, Any]], *, check: bool = False, **pattern: Any
) -> PushReply:
    token = await sign(d.config, run, **pattern)
    return reply_for(
        await d.handle_push(source, token, check=check, parent_id_filter=None, remote="192.0.2.7")
    )


def log_lines(tmp: Path) -> list[list[str]]:
    path = tmp / "log"
    if not path.exists():
        return []
    return [line.split("|") for line in path.read_text().splitlines()]


def who(tmp: Path) -> list[tuple[str, str, str]]:
    """(receiver, event, event id) per handler run, in run order."""
    return [(f[0], f[1], f[2]) for f in log_lines(tmp)]


def test_receivers_run_alphabetically_once_per_output_in_emission_order(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "sender": {"allowPush": True, "eventsSend": ".*"},
            "r2": receiver(["a", "b"]),
            "r1": receiver(["a", "b"]),
            "other": receiver(["c"]),
        },
    )

    async def go() -> PushReply:
        d = await started(cfg)
        return await push(
            d, "sender", [emit("one", "x", "b"), emit("two", "y", "a"), emit("three", "z", "b")]
        )

    reply = asyncio.run(go())
    assert reply.status == 200
    assert who(tmp_path) == [
        ("r1", "b", "one"),
        ("r2", "b", "one"),
        ("r1", "a", "two"),
        ("r2", "a", "two"),
        ("r1", "b", "three"),
        ("r2", "b", "three"),
    ]


def test_handler_env_carries_event_output_signer_key_and_pusher_address(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {"sender": {"allowPush": True, "eventsSend": ".*"}, "handler": receiver(["go"])},
    )

    async def go() -> None:
        d = await started(cfg)
        await push(d, "sender", [emit("fire it", "'hello world'", "go")])

    asyncio.run(go())
    assert log_lines(tmp_path) == [
        ["handler", "go", "fire it", "hello world", "reqYEklgP4", "192.0.2.7", "event"]
    ]


def test_events_send_regexp_is_an_unanchored_search_and_empty_sends_nothing(
    tmp_path: Path,
) -> None:
    cfg = make_config(
        tmp_path,
        {
            "quiet": {"allowPush": True},
            "picky": {"allowPush": True, "eventsSend": "[^b]"},
            "recv": receiver(["a", "b", "c"]),
        },
    )
    run = [emit("1", "x", "a"), emit("2", "x", "b"), emit("3", "x", "c")]

    async def go() -> None:
        d = await started(cfg)
        await push(d, "quiet", run)
        assert who(tmp_path) == []
        await push(d, "picky", run)

    asyncio.run(go())
    assert who(tmp_path) == [("recv", "a", "1"), ("recv", "c", "3")]


def test_a_source_never_receives_its_own_events(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "loop": {
                "allowPush": True,
                "eventsSend": ".*",
                "eventsReceive": ["a"],
                "commands": [{"id": "log", "always": True, "change": LOG_LINE}],
            },
            "zz": receiver(["a"]),
        },
    )

    # The pushed pattern (which replaces loop's commands) logs whenever it runs for an event,
    # so a delivery of "a" back to loop itself would show up in the log.
    log_on_event = {
        "id": "log",
        "always": True,
        "change": f'if [ "$ETCHA_SOURCE_TRIGGER" = event ]; then {LOG_LINE}; fi',
    }

    async def go() -> None:
        d = await started(cfg)
        await push(d, "loop", [emit("1", "x", "a"), log_on_event])

    asyncio.run(go())
    assert who(tmp_path) == [("zz", "a", "1")]


def test_events_raised_by_handlers_do_not_cascade(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "sender": {"allowPush": True, "eventsSend": ".*"},
            "middle": {
                "triggerOnly": True,
                "eventsReceive": ["first"],
                "eventsSend": ".*",
                "commands": [
                    {"id": "log", "always": True, "change": LOG_LINE, "onChange": ["etcha:second"]}
                ],
            },
            "end": receiver(["second"]),
        },
    )

    async def go() -> None:
        d = await started(cfg)
        await push(d, "sender", [emit("1", "x", "first")])

    asyncio.run(go())
    assert who(tmp_path) == [("middle", "first", "1")]


def test_handler_runs_the_pushed_pattern_directly_with_run_exec_ignoring_check_only(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "marker"
    cfg = make_config(
        tmp_path,
        {
            "sender": {"allowPush": True, "eventsSend": ".*"},
            "handler": {"allowPush": True, "checkOnly": True, "eventsReceive": ["go"]},
        },
    )
    handler_run = [
        # a check that passes would skip the change in a diff run; handlers still run it only
        # when the check fails, like any run, so the check here fails
        {"id": "h", "check": "false", "change": f'echo "$FROM_RUN_EXEC" > {marker}'}
    ]

    async def go() -> None:
        d = await started(cfg)
        reply = await push(d, "handler", handler_run, runExec={"env": {"FROM_RUN_EXEC": "yes"}})
        assert reply.status == 200
        assert not marker.exists()  # checkOnly: the push itself changed nothing
        await push(d, "sender", [emit("1", "x", "go")])

    asyncio.run(go())
    assert marker.read_text() == "yes\n"


def test_a_failing_handler_does_not_stop_dispatch_to_later_receivers(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "sender": {"allowPush": True, "eventsSend": ".*"},
            "a-fails": {
                "triggerOnly": True,
                "eventsReceive": ["go"],
                "commands": [{"id": "boom", "always": True, "change": "exit 3"}],
            },
            "b-works": receiver(["go"]),
            "c-nothing": {"triggerOnly": True, "eventsReceive": ["go"]},
        },
    )

    async def go() -> PushReply:
        d = await started(cfg)
        return await push(d, "sender", [emit("1", "x", "go")])

    reply = asyncio.run(go())
    assert reply.status == 200
    assert who(tmp_path) == [("b-works", "go", "1")]


def test_exit_event_runs_receivers_then_sets_exit_and_keeps_state(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {"main": {"allowPush": True, "eventsSend": "exit"}, "bye": receiver(["exit"])},
    )

    async def go() -> PushReply:
        d = await started(cfg)
        return await push(d, "main", [emit("stop", "x", "exit")])

    reply = asyncio.run(go())
    assert reply.status == 200 and reply.body is not None
    assert reply.body["exit"] is True
    assert who(tmp_path) == [("bye", "exit", "stop")]
    assert (tmp_path / "state" / "main.jwt").exists()


def test_exit_event_not_allowed_by_events_send_does_nothing(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {"main": {"allowPush": True, "eventsSend": "^other$"}, "bye": receiver(["exit"])},
    )

    async def go() -> PushReply:
        d = await started(cfg)
        return await push(d, "main", [emit("stop", "x", "exit")])

    reply = asyncio.run(go())
    assert reply.body is not None and reply.body["exit"] is False
    assert who(tmp_path) == []


def test_events_receive_exit_receiver_requests_exit(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "main": {"allowPush": True, "eventsSend": ".*"},
            "quitter": receiver(["done"], eventsReceiveExit=True),
        },
    )

    async def go() -> PushReply:
        d = await started(cfg)
        return await push(d, "main", [emit("1", "x", "done")])

    reply = asyncio.run(go())
    assert reply.body is not None and reply.body["exit"] is True
    assert who(tmp_path) == [("quitter", "done", "1")]


def test_push_system_event_carries_the_result_and_skips_check_and_refused_pushes(
    tmp_path: Path,
) -> None:
    cfg = make_config(
        tmp_path,
        {"core": {"allowPush": True}, "audit": receiver(["push"])},
    )

    async def go() -> None:
        d = await started(cfg)
        await push(d, "core", [emit("said", "hi")])
        await push(d, "core", [emit("said", "hi")], check=True)
        refused = reply_for(
            await d.handle_push(
                "core", "garbage", check=False, parent_id_filter=None, remote="192.0.2.7"
            )
        )
        assert refused.status == 404
        await push(d, "core", [{"id": "fails", "always": True, "change": "exit 1"}])

    asyncio.run(go())
    lines = log_lines(tmp_path)
    assert [(f[0], f[1], f[2], f[4], f[5]) for f in lines] == [
        ("audit", "push", "core", "reqYEklgP4", "192.0.2.7"),
        ("audit", "push", "core", "reqYEklgP4", "192.0.2.7"),
    ]
    first = json.loads(lines[0][3])
    assert first["changedIDs"] == ["said"] and first["err"] == ""
    second = json.loads(lines[1][3])
    assert second["err"].startswith("error changing id core > fails")


def test_pull_system_event_reports_fetched_not_modified_and_error(tmp_path: Path) -> None:
    token_file = tmp_path / "pattern.jwt"
    cfg = make_config(
        tmp_path,
        {"puller": {"pullPaths": [str(token_file)]}, "watch": receiver(["pull"])},
    )

    async def go() -> None:
        token_file.write_text(await sign(cfg, [emit("p", "x")]))
        d = await started(cfg)
        await d.run_source("puller")
        await d.run_source("puller")
        token_file.unlink()
        await d.run_source("puller")

    asyncio.run(go())
    assert [(f[0], f[1], f[2], f[3]) for f in log_lines(tmp_path)] == [
        ("watch", "pull", "puller", "fetched"),
        ("watch", "pull", "puller", "not_modified"),
        ("watch", "pull", "puller", "error"),
    ]


def test_patterns_cannot_emit_reserved_system_events(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {
            "faker": {"allowPush": True, "eventsSend": ".*"},
            "audit": receiver(["pull", "shell"]),
        },
    )

    async def go() -> None:
        d = await started(cfg)
        await push(d, "faker", [emit("1", "x", "pull", "shell")])

    asyncio.run(go())
    assert who(tmp_path) == []


def test_event_output_is_the_remove_output_for_removals() -> None:
    changed = Output(id="a", changed=True, change_out="c")
    removed = Output(id="b", removed=True, remove_out="r")
    assert event_output(changed) == "c"
    assert event_output(removed) == "r"


def test_receivers_for_is_alphabetical_and_excludes_the_sender(tmp_path: Path) -> None:
    cfg = make_config(
        tmp_path,
        {"c": receiver(["e"]), "a": receiver(["e"]), "b": receiver(["x"]), "s": receiver(["e"])},
    )
    d = Daemon(cfg)
    assert receivers_for(d, "e", "s") == ["a", "c"]
