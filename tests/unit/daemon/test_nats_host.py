"""The host side of the NATS transport without a server: backoff, replies, subscribed sources."""

from __future__ import annotations

import asyncio

import pytest

from agent.config.load import config_from_dict
from agent.daemon.ingress import Ran, Refused, Unavailable
from agent.daemon.nats_host import backoff, nats_sources, reply_document, start_nats
from agent.run.result import Result


def test_backoff_doubles_up_to_the_cap_with_jitter_in_the_upper_half() -> None:
    for attempt, full in ((0, 0.5), (1, 1.0), (3, 4.0), (10, 30.0), (50, 30.0)):
        delays = [backoff(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in delays), (attempt, min(delays), max(delays))
        assert len(set(delays)) > 1  # jitter: not every host waits the same


def test_a_refusal_reply_carries_only_the_hostname_and_status() -> None:
    assert reply_document("h1", Refused("signature")) == (
        {"hostname": "h1", "status": "refused"},
        "refused",
    )


def test_a_run_reply_is_the_result_json_plus_hostname_and_status() -> None:
    doc, status = reply_document("h1", Ran(Result(changed_ids=("a",))))
    assert status == "ok"
    assert doc["hostname"] == "h1" and doc["status"] == "ok"
    assert doc["changedIDs"] == ["a"] and doc["err"] == ""


@pytest.mark.parametrize(
    "outcome", [Ran(Result(err="command a failed")), Unavailable(Result(err="shutting down"))]
)
def test_a_failed_or_unavailable_run_replies_failed(outcome: Ran | Unavailable) -> None:
    doc, status = reply_document("h1", outcome)
    assert status == "failed" == doc["status"]
    assert doc["err"]


def test_only_allow_nats_sources_with_subject_safe_names_are_subscribed() -> None:
    config = config_from_dict(
        {
            "sources": {
                "web": {"allowNATS": True},
                "db": {"allowPush": True},
                "a.b": {"allowNATS": True},
                "ops-1": {"allowNATS": True},
            }
        }
    )
    assert nats_sources(config) == ["ops-1", "web"]


class _Service:
    """The little of a Service the NATS side reads before connecting."""

    def __init__(self, nats: dict[str, object]) -> None:
        self.config = config_from_dict({"nats": nats, "sources": {"web": {"allowNATS": True}}})
        self.ingress = None
        self.metrics = None

    def stored_token(self, source: str) -> None:
        return None

    def status(self) -> dict[str, object]:
        return {}


def test_a_nats_section_with_two_authentications_is_logged_and_not_connected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    nats = {"servers": ["nats://127.0.0.1:1"], "hostname": "h", "token": "t", "user": "u"}
    host = asyncio.run(start_nats(_Service(nats)))  # type: ignore[arg-type]
    assert host is None
    assert "NATS: not connecting: nats: expected one authentication" in caplog.text


def test_no_nats_section_starts_nothing() -> None:
    assert asyncio.run(start_nats(_Service({}))) is None  # type: ignore[arg-type]
