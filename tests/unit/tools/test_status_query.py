"""``agent status``'s client side (:mod:`agent.tools.status`) in-process, against real HTTP servers
on 127.0.0.1: target selection, the answer of each kind of reply, and the table/JSON output."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from support import free_port

from agent.config.schema import Config, config_from_dict
from agent.core.errors import UsageError
from agent.tools.status import (
    StatusAnswer,
    format_json,
    format_table,
    query_status,
    status_targets,
)

KEY = "status-key"


@pytest.fixture
def servers() -> Iterator[tuple[list[int], dict[int, tuple[int, bytes]]]]:
    """Five plain-HTTP servers and what each answers, by port: (status, body)."""
    replies: dict[int, tuple[int, bytes]] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                status, body = 401, b"{}"
            else:
                address = self.server.server_address
                assert isinstance(address, tuple)
                status, body = replies[int(address[1])]
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    running = [http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(5)]
    for server in running:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield [s.server_address[1] for s in running], replies
    for server in running:
        server.shutdown()
        server.server_close()


def _config(ports: dict[str, int], key: str = KEY) -> Config:
    targets = {
        name: {"hostname": "127.0.0.1", "port": port, "insecure": True}
        for name, port in ports.items()
    }
    return config_from_dict({"run": {"systemMetricsKey": key}, "targets": targets})


DOC: dict[str, Any] = {
    "sources": {
        "web": {
            "pattern": {"keyID": "ci", "jti": "j1"},
            "lastRun": {
                "time": "2026-01-01T00:00:00Z",
                "trigger": "push",
                "changedIDs": ["a", "b"],
                "failedIDs": ["c"],
                "durationMs": 1500,
            },
            "nextRun": "2026-01-01T00:05:00Z",
            "lastRefusal": {"reason": "expired", "time": "2026-01-01T00:01:00Z"},
            "stale": True,
        },
        "db": {"lastRun": {"err": "boom"}},
    }
}


def test_each_reply_becomes_a_document_or_an_error_that_says_why(
    servers: tuple[list[int], dict[int, tuple[int, bytes]]],
) -> None:
    (good, missing, broken, not_json, wrong), replies = servers
    replies.update(
        {
            good: (200, json.dumps(DOC).encode()),
            missing: (404, b""),
            broken: (500, b""),
            not_json: (200, b"<html>"),
            wrong: (200, b'{"sources": []}'),
        }
    )
    names = {"a": good, "b": missing, "c": broken, "d": not_json, "e": wrong, "f": free_port()}
    config = _config(names)
    answers = query_status(config, status_targets(config), timeout=5)
    assert [a.target for a in answers] == ["a", "b", "c", "d", "e", "f"]
    assert answers[0].document == DOC and answers[0].error == ""
    assert answers[0].url == f"http://127.0.0.1:{good}/etcha/v1/system/status"
    assert answers[1].error.startswith("404: no status endpoint")
    assert answers[2].error == "expected status 200, got 500"
    assert answers[3].error.startswith("expected a JSON document")
    assert answers[4].error == "expected a status document with sources"
    assert answers[5].error.startswith("error performing request:")


def test_a_refused_key_is_reported_as_a_401(
    servers: tuple[list[int], dict[int, tuple[int, bytes]]],
) -> None:
    config = _config({"a": servers[0][0]}, key="wrong")
    (answer,) = query_status(config, status_targets(config), timeout=5)
    assert answer.error.startswith("401: the key was refused")
    assert answer.document is None


def test_status_needs_a_metrics_key_in_the_client_config() -> None:
    config = config_from_dict({"targets": {"a": {"hostname": "127.0.0.1"}}})
    with pytest.raises(UsageError, match=r"expected run\.systemMetricsKey"):
        query_status(config, status_targets(config))


def test_targets_are_filtered_by_an_unanchored_regex_sorted_and_refused_when_none() -> None:
    config = _config({"web2": 1, "db": 2, "web1": 3})
    assert [t.name for t in status_targets(config, target_filter="eb")] == ["web1", "web2"]
    assert [t.port for t in status_targets(config, target_filter="web", port="9")] == ["9", "9"]
    with pytest.raises(UsageError, match="-n: expected a regular expression"):
        status_targets(config, target_filter="(")
    with pytest.raises(UsageError, match="status: no targets"):
        status_targets(config, target_filter="^nothing$")
    (adhoc,) = status_targets(config, host="http://127.0.0.1", port="7")
    assert (adhoc.scheme, adhoc.port) == ("http", "7")


def test_a_pin_is_refused_for_a_plain_http_target() -> None:
    config = _config({"web": 1})
    with pytest.raises(UsageError, match="expected an https target to pin, got web over http"):
        status_targets(config, fingerprint="sha256:" + "ab" * 32)


def test_the_table_has_one_row_per_source_and_an_error_row_per_failed_target() -> None:
    answers = [
        StatusAnswer("t1", "u1", document=DOC),
        StatusAnswer("t2", "u2", document={"sources": {}}),
        StatusAnswer("t3", "u3", error="expected status 200, got 500"),
    ]
    lines = format_table(answers)
    assert lines[0].split() == [
        "TARGET", "SOURCE", "KEY", "JTI", "LAST", "RUN", "TRIGGER", "RESULT", "NEXT", "RUN",
        "REFUSED", "STALE",
    ]  # fmt: skip
    assert lines[1].split() == ["t1", "db", "-", "-", "-", "-", "error", "-", "-", "no"]
    web = lines[2]
    assert web.startswith("t1") and "ci" in web and "j1" in web
    assert "2 changed, 1 failed [1.5s]" in web
    assert "expired 2026-01-01T00:01:00Z" in web and web.endswith("yes")
    assert lines[3].split()[:3] == ["t2", "(no", "sources)"]
    assert lines[4] == "t3: ERROR: expected status 200, got 500"
    assert format_table([answers[2]]) == ["t3: ERROR: expected status 200, got 500"]


def test_json_output_is_keyed_by_target_with_url_error_and_status() -> None:
    answers = [StatusAnswer("t1", "u1", document=DOC), StatusAnswer("t3", "u3", error="boom")]
    assert json.loads(format_json(answers)) == {
        "t1": {"url": "u1", "error": None, "status": DOC},
        "t3": {"url": "u3", "error": "boom", "status": None},
    }
