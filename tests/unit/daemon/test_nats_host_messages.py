"""The host side of the NATS transport handling messages (:class:`agent.daemon.nats_host.NATSHost`)
without a server: oversized tokens and bad filters are failed replies, a reply over the server's
max_payload drops the command outputs, status needs the key, and catch-up applies stored messages
oldest first, skipping check messages and the token already held."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import pytest

from agent.config.load import config_from_dict
from agent.daemon.ingress import Ran, Refused
from agent.daemon.nats_host import NATSHost
from agent.run.result import Result


@dataclass
class _Msg:
    data: bytes = b""
    headers: dict[str, str] | None = None
    reply: str = "_INBOX.1"
    subject: str = "etcha.push.web"
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)

    async def respond(self, body: bytes) -> None:
        self.sent.append(json.loads(body))


class _Ingress:
    def __init__(self) -> None:
        self.pushes: list[tuple[str, str, bool, re.Pattern[str] | None]] = []

    async def handle_push(
        self,
        source: str,
        token: str,
        *,
        check: bool,
        parent_id_filter: re.Pattern[str] | None,
        remote: str,
        via_nats: bool = False,
    ) -> Ran | Refused:
        self.pushes.append((source, token, check, parent_id_filter))
        if token == "bad":
            return Refused("signature")
        return Ran(Result(changed_ids=("a",), changed_outputs=("x" * 300,)))


class _Metrics:
    def __init__(self) -> None:
        self.messages: list[tuple[str, str]] = []

    def nats_message(self, source: str, status: str) -> None:
        self.messages.append((source, status))

    def nats_connected(self, up: bool) -> None:
        pass


@dataclass
class _Held:
    raw: str


@dataclass
class _Token:
    verified: _Held


class _Service:
    def __init__(self, *, stream: str = "ETCHA", key: str = "", held: str = "") -> None:
        nats: dict[str, Any] = {"servers": ["nats://127.0.0.1:1"], "hostname": "h1"}
        nats["stream"] = stream
        run: dict[str, Any] = {"maxTokenBytes": 100}
        if key:
            run["systemMetricsKey"] = key
        self.config = config_from_dict(
            {"nats": nats, "run": run, "sources": {"web": {"allowNATS": True}}}
        )
        self.ingress = _Ingress()
        self.metrics = _Metrics()
        self.held = held

    def stored_token(self, source: str) -> _Token | None:
        return _Token(_Held(self.held)) if self.held else None

    def status(self) -> dict[str, object]:
        return {"sources": {"web": {}}}


def host(service: _Service) -> NATSHost:
    return NATSHost(service)  # type: ignore[arg-type]


def test_a_token_over_max_token_bytes_is_a_failed_reply_without_admission() -> None:
    service = _Service()
    doc, status = asyncio.run(host(service).admit("web", b"x" * 101, None, check=False))
    assert status == "failed"
    assert doc == {
        "hostname": "h1",
        "status": "failed",
        "err": "push: expected a token of at most 100 bytes, got 101",
    }
    assert service.ingress.pushes == []


def test_a_filter_header_that_is_not_a_regexp_is_a_failed_reply_and_a_good_one_is_passed_on() -> (
    None
):
    service = _Service()
    nats = host(service)
    doc, status = asyncio.run(nats.admit("web", b"tok", {"Etcha-Filter": "("}, check=False))
    assert status == "failed"
    assert doc["err"].startswith("Etcha-Filter: expected a regular expression, got '('")
    assert service.ingress.pushes == []
    doc, status = asyncio.run(nats.admit("web", b"tok", {"Etcha-Filter": "^a"}, check=True))
    assert status == "ok" and doc["changedIDs"] == ["a"]
    ((source, token, check, pattern),) = service.ingress.pushes
    assert (source, token, check) == ("web", "tok", True)
    assert pattern is not None and pattern.pattern == "^a"


def test_a_reply_over_the_servers_max_payload_leaves_out_the_command_outputs() -> None:
    service = _Service()
    nats = host(service)

    class _Conn:
        max_payload = 200

    nats._nc = _Conn()
    msg = _Msg(data=b"tok", headers={"Etcha-Check": "TRUE"})
    asyncio.run(nats._on_push(msg, "web"))
    (reply,) = msg.sent
    assert "changedOutputs" not in reply
    assert reply["changedIDs"] == ["a"]
    assert "(command outputs left out: the reply was " in reply["err"]
    assert "over the NATS server's max_payload 200)" in reply["err"]
    assert service.ingress.pushes[0][2] is True  # the check header, case-insensitive
    assert service.metrics.messages == [("web", "ok")]


def test_status_requests_need_the_metrics_key(caplog: pytest.LogCaptureFixture) -> None:
    nats = host(_Service(key="secret"))
    wrong = _Msg(headers={"Authorization": "Bearer nope"})
    with caplog.at_level(logging.INFO, logger="agent.daemon.nats_host"):
        asyncio.run(nats._on_status(wrong))
    assert wrong.sent == []
    assert "status request without the right run.systemMetricsKey ignored" in caplog.text
    right = _Msg(headers={"Authorization": "Bearer secret"})
    asyncio.run(nats._on_status(right))
    assert right.sent == [{"hostname": "h1", "status": {"sources": {"web": {}}}}]


class _Stream:
    """A JetStream context holding the last message of some subjects."""

    def __init__(self, stored: dict[str, _Msg], broken: bool = False) -> None:
        self.stored = stored
        self.broken = broken

    async def get_last_msg(self, stream: str, subject: str) -> _Msg:
        from nats.js.errors import NotFoundError

        if self.broken:
            raise RuntimeError("stream gone")
        if subject not in self.stored:
            raise NotFoundError
        return self.stored[subject]


class _StreamConn:
    def __init__(self, js: _Stream) -> None:
        self.js = js

    def jetstream(self) -> _Stream:
        return self.js


def test_catch_up_applies_stored_messages_oldest_first_skipping_checks_and_the_held_token() -> None:
    service = _Service(stream="ETCHA", held="held")
    stored = {
        "etcha.push.web": _Msg(data=b"older", seq=3),
        "etcha.push.web.h1": _Msg(data=b"newer", seq=9),
    }
    asyncio.run(host(service)._catch_up(_StreamConn(_Stream(stored))))
    assert [p[1] for p in service.ingress.pushes] == ["older", "newer"]
    assert service.metrics.messages == [("web", "ok"), ("web", "ok")]

    service = _Service(stream="ETCHA", held="held")
    stored = {
        "etcha.push.web": _Msg(data=b"held\n", seq=3),
        "etcha.push.web.h1": _Msg(data=b"check", seq=9, headers={"Etcha-Check": "true"}),
    }
    asyncio.run(host(service)._catch_up(_StreamConn(_Stream(stored))))
    assert service.ingress.pushes == []
    assert service.metrics.messages == [("web", "ok")]  # the held one counts as ok


def test_catch_up_is_skipped_without_a_stream_or_when_the_stream_cannot_be_read(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = _Service(stream="")
    asyncio.run(host(service)._catch_up(None))  # no stream: nothing is read
    service = _Service(stream="ETCHA")
    asyncio.run(host(service)._catch_up(_StreamConn(_Stream({}, broken=True))))
    assert "NATS: catch-up skipped: cannot read stream ETCHA: stream gone" in caplog.text
    assert service.ingress.pushes == []


def test_a_message_whose_handling_crashes_is_logged_and_frees_its_slot(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats = host(_Service())

    async def crash(msg: Any) -> None:
        raise RuntimeError("boom")

    async def go() -> int:
        callback = nats._handler(crash)
        await callback(_Msg(subject="etcha.push.web.h1"))
        await nats.close()  # waits for the message in progress
        return nats._slots._value

    assert asyncio.run(go()) == 32
    assert "NATS: message on etcha.push.web.h1 failed" in caplog.text
