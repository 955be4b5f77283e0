"""How ``agent push --nats`` reads a reply (agent.tools.nats_push), without a server."""

from __future__ import annotations

import json
from pathlib import Path

from support import client_config, run_agent

from agent.tools.nats_push import outcome_from_reply
from agent.tools.push_output import Recap, exit_code, outcome_status


def test_a_refused_reply_is_a_failed_outcome() -> None:
    outcome = outcome_from_reply(b'{"hostname": "h1", "status": "refused"}')
    assert outcome is not None
    assert outcome.target == "h1" and outcome_status(outcome) == "failed"
    assert exit_code(Recap([outcome]), detailed=False) == 1


def test_an_ok_reply_reads_its_result() -> None:
    body = {"hostname": "h2", "status": "ok", "changedIDs": ["a"], "err": ""}
    outcome = outcome_from_reply(json.dumps(body).encode())
    assert outcome is not None and outcome.changed_ids == ("a",)
    assert outcome_status(outcome) == "changed"
    assert exit_code(Recap([outcome]), detailed=True) == 2


def test_a_failed_reply_keeps_its_error() -> None:
    body = {"hostname": "h3", "status": "failed", "err": "command a failed"}
    outcome = outcome_from_reply(json.dumps(body).encode())
    assert outcome is not None and outcome.error == "command a failed"


def test_a_jetstream_ack_or_garbage_is_not_a_host_reply() -> None:
    assert outcome_from_reply(b'{"stream": "ETCHA", "seq": 3}') is None
    assert outcome_from_reply(b"\xff") is None
    assert outcome_from_reply(b"[1]") is None


def test_host_and_expect_without_nats_are_usage_errors(tmp_path: Path) -> None:
    client = client_config(tmp_path)
    for flags in (("--host", "h1"), ("--expect", "3")):
        r = run_agent("-c", str(client), "push", *flags, "core", "true", cwd=tmp_path)
        assert r.returncode == 2, r.stderr
        assert "--host and --expect need --nats" in r.stderr
