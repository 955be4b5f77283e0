"""``agent status``: ask daemons what they run (``GET /etcha/v1/system/status``).

Targets: every config ``targets`` entry whose name matches ``-n`` (unanchored search; unlike a
push, no ``sourcePatterns`` entry is needed), sorted by name; or the single ad-hoc ``-h`` target
(``https`` unless written ``http://host``), as :mod:`agent.tools.push_targets` builds them. TLS
works as for a push (:func:`agent.tools.push.client_options`: CA, ``tlsSkipVerify``, a target's
``fingerprint`` or ``--fingerprint``), over the one HTTP client.

The key is the client config's ``run.systemMetricsKey``, sent as ``Authorization: Bearer``
(never in the URL). Each target is asked at once (a bounded thread pool), each bounded by the
timeout; a target that fails is reported with its reason, and the others still answer.

Output: a table (one row per target and source) or, with ``-f json``, one JSON object keyed by
target name: ``{"url", "error", "status"}``, ``status`` being the daemon's document as it came.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.config.schema import Config
from agent.core.durations import format_duration
from agent.core.errors import UsageError
from agent.net.http import HTTPClient, RequestError, TLSVerifyError
from agent.net.tls import FingerprintMismatch
from agent.tools.push import client_options, fingerprint_mismatch_message, tls_failure_message
from agent.tools.push_targets import (
    PushTarget,
    ad_hoc_target,
    config_target,
    parse_pin,
    require_https_for_pin,
)

__all__ = [
    "STATUS_PATH",
    "StatusAnswer",
    "format_json",
    "format_table",
    "query_status",
    "status_targets",
]

#: The daemon's status route (``agent.daemon.status.STATUS_PATH``; the layers keep it twice).
STATUS_PATH = "/etcha/v1/system/status"
#: The largest status document accepted.
MAX_STATUS_BYTES = 4 * 1024 * 1024
#: Seconds one target may take, connection included.
DEFAULT_TIMEOUT = 30.0
#: Targets asked at once.
MAX_WORKERS = 16


@dataclass(frozen=True, slots=True)
class StatusAnswer:
    """One target's answer: the document, or why there is none."""

    target: str
    url: str
    document: Mapping[str, Any] | None = None
    error: str = ""


def status_url(target: PushTarget) -> str:
    """``<scheme>://<host>:<port>/etcha/v1/system/status``."""
    host = f"[{target.hostname}]" if ":" in target.hostname else target.hostname
    return f"{target.scheme}://{host}:{target.port}{STATUS_PATH}"


def status_targets(
    config: Config,
    *,
    host: str | None = None,
    port: str | None = None,
    target_filter: str | None = None,
    fingerprint: str | None = None,
) -> list[PushTarget]:
    """The targets to ask, sorted by name.

    Raises:
        UsageError: a bad ``-n`` regex or ``--fingerprint``, a pin for a plain-HTTP target, or
            no target at all.
    """
    pinned = parse_pin(fingerprint)
    if host:
        targets = [ad_hoc_target(host, port=port, path=None, fingerprint=pinned)]
    else:
        targets = _config_targets(config, port, target_filter, pinned)
    if not targets:
        raise UsageError(
            "status: no targets: expected config targets (targets: {web1: {hostname: "
            "'web1.example.com'}}) matching -n, or -h HOST"
        )
    require_https_for_pin(targets, pinned)
    return targets


def _config_targets(
    config: Config, port: str | None, target_filter: str | None, pinned: str
) -> list[PushTarget]:
    try:
        regex = re.compile(target_filter) if target_filter else None
    except re.error as exc:
        raise UsageError(
            f"-n: expected a regular expression, got {target_filter!r}: {exc}"
        ) from exc
    targets: list[PushTarget] = []
    for name in sorted(config.targets):
        if regex is not None and not regex.search(name):
            continue
        targets.append(config_target(config, name, port=port or "", pinned=pinned))
    return targets


def _ask(client: HTTPClient, target: PushTarget, key: str, timeout: float) -> StatusAnswer:
    url = status_url(target)
    try:
        resp = client.request(
            url,
            headers=(("Authorization", f"Bearer {key}"), ("Accept", "application/json")),
            timeout=timeout,
            max_bytes=MAX_STATUS_BYTES,
            fingerprint=target.fingerprint,
        )
    except FingerprintMismatch as exc:
        error = fingerprint_mismatch_message(target, exc.expected, exc.got)
        return StatusAnswer(target.name, url, error=error)
    except TLSVerifyError as exc:
        return StatusAnswer(target.name, url, error=tls_failure_message(target, exc.reason))
    except RequestError as exc:
        return StatusAnswer(target.name, url, error=f"error performing request: {exc}")
    return _answer(target, url, resp.status, resp.body)


def _answer(target: PushTarget, url: str, status: int, body: bytes) -> StatusAnswer:
    if status == 401:
        error = "401: the key was refused (run.systemMetricsKey differs from the target's)"
        return StatusAnswer(target.name, url, error=error)
    if status == 404:
        error = "404: no status endpoint (the target has no run.systemMetricsKey, or is older)"
        return StatusAnswer(target.name, url, error=error)
    if status != 200:
        return StatusAnswer(target.name, url, error=f"expected status 200, got {status}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return StatusAnswer(target.name, url, error=f"expected a JSON document, got {exc}")
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), dict):
        return StatusAnswer(target.name, url, error="expected a status document with sources")
    return StatusAnswer(target.name, url, document=doc)


def query_status(
    config: Config, targets: Sequence[PushTarget], *, timeout: float = DEFAULT_TIMEOUT
) -> list[StatusAnswer]:
    """Ask every target, at most :data:`MAX_WORKERS` at once; answers in target order.

    Raises:
        UsageError: the client config has no ``run.systemMetricsKey``.
    """
    key = config.run.system_metrics_key
    if not key:
        raise UsageError(
            "status: expected run.systemMetricsKey in the client config (the key the targets' "
            "metrics and status endpoints use), got none"
        )
    client = HTTPClient(client_options(config))
    workers = max(1, min(MAX_WORKERS, len(targets)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="status") as pool:
        return list(pool.map(lambda t: _ask(client, t, key, timeout), targets))


def format_json(answers: Sequence[StatusAnswer]) -> str:
    """One JSON object keyed by target name."""
    out = {
        a.target: {"url": a.url, "error": a.error or None, "status": a.document} for a in answers
    }
    return json.dumps(out, indent=2, sort_keys=True)


_COLUMNS: tuple[str, ...] = (
    "TARGET",
    "SOURCE",
    "KEY",
    "JTI",
    "LAST RUN",
    "TRIGGER",
    "RESULT",
    "NEXT RUN",
)
_COLUMNS += ("REFUSED", "STALE")


def _result_text(run: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for key, word in (
        ("changedIDs", "changed"),
        ("removedIDs", "removed"),
        ("failedIDs", "failed"),
    ):
        ids = run.get(key) or []
        if ids:
            parts.append(f"{len(ids)} {word}")
    if run.get("err") and not run.get("failedIDs"):
        parts.append("error")
    text = ", ".join(parts) or "no changes"
    ms = run.get("durationMs")
    return f"{text} [{format_duration(ms / 1000)}]" if isinstance(ms, int | float) else text


def _row(target: str, name: str, src: Mapping[str, Any]) -> tuple[str, ...]:
    pattern = src.get("pattern") or {}
    run = src.get("lastRun") or {}
    refusal = src.get("lastRefusal") or {}
    return (
        target,
        name,
        str(pattern.get("keyID") or "-"),
        str(pattern.get("jti") or "-"),
        str(run.get("time") or "-"),
        str(run.get("trigger") or "-"),
        _result_text(run) if run else "-",
        str(src.get("nextRun") or "-"),
        f"{refusal.get('reason')} {refusal.get('time')}" if refusal else "-",
        "yes" if src.get("stale") else "no",
    )


def format_table(answers: Sequence[StatusAnswer]) -> list[str]:
    """The table: one row per target and source; a failed target is one ``ERROR`` row."""
    rows: list[tuple[str, ...]] = []
    errors: list[str] = []
    for a in answers:
        if a.document is None:
            errors.append(f"{a.target}: ERROR: {a.error}")
            continue
        sources: Mapping[str, Any] = a.document.get("sources") or {}
        if not sources:
            rows.append((a.target, "(no sources)", *("-",) * (len(_COLUMNS) - 2)))
        for name in sorted(sources):
            rows.append(_row(a.target, name, sources[name]))
    lines: list[str] = []
    if rows:
        widths = [max(len(r[i]) for r in (_COLUMNS, *rows)) for i in range(len(_COLUMNS))]
        for r in (_COLUMNS, *rows):
            lines.append(
                "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            )
    return lines + errors
