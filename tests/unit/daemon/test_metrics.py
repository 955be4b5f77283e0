"""Metrics rendered in Prometheus text format and parsed back."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from agent.daemon.metrics import MAX_ADDRESS_LABELS, Metrics


def samples(m: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = m.render()
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(m: Metrics, metric: str, /, **labels: str) -> float | None:
    return samples(m).get((metric, tuple(sorted(labels.items()))))


def test_render_returns_prometheus_text_content_type() -> None:
    body, content_type = Metrics().render()
    assert content_type.startswith("text/plain")
    assert b"# TYPE etcha_commands_total counter" in body


def test_command_done_counts_with_etcha_labels() -> None:
    m = Metrics(process_metrics=False)
    for _ in range(2):
        m.command_done(id="a", parent_id="", mode="check", error=True, source="web")
    m.command_done(
        id="a",
        parent_id="g",
        mode="change",
        error=False,
        source="web",
        public_key="k1",
        remote_addr="10.0.0.1",
    )
    base = {"id": "a", "public_key": "", "remote_addr": "", "source": "web"}
    assert value(m, "etcha_commands_total", error="1", mode="check", parentID="", **base) == 2
    assert (
        value(
            m,
            "etcha_commands_total",
            error="0",
            mode="change",
            parentID="g",
            id="a",
            public_key="k1",
            remote_addr="10.0.0.1",
            source="web",
        )
        == 1
    )


def test_command_observer_binds_source_context() -> None:
    m = Metrics(process_metrics=False)
    obs = m.command_observer("db", public_key="k", remote_addr="1.2.3.4")
    obs.command_done(id="x", parent_id="", mode="remove", error=True)
    assert (
        value(
            m,
            "etcha_commands_total",
            error="1",
            id="x",
            mode="remove",
            parentID="",
            public_key="k",
            remote_addr="1.2.3.4",
            source="db",
        )
        == 1
    )


def test_unknown_command_mode_is_refused() -> None:
    with pytest.raises(ValueError, match="command mode"):
        Metrics(process_metrics=False).command_done(
            id="a", parent_id="", mode="bogus", error=False, source="s"
        )


def test_source_run_counts_by_trigger_and_error() -> None:
    m = Metrics(process_metrics=False)
    m.source_run("web", "init", False)
    m.source_run("web", "init", False)
    m.source_run("web", "push", True, public_key="k", remote_addr="1.1.1.1")
    assert (
        value(
            m,
            "etcha_sources_total",
            error="0",
            name="web",
            public_key="",
            remote_addr="",
            trigger="init",
        )
        == 2
    )
    assert (
        value(
            m,
            "etcha_sources_total",
            error="1",
            name="web",
            public_key="k",
            remote_addr="1.1.1.1",
            trigger="push",
        )
        == 1
    )


def test_set_source_commands_sets_change_and_remove_gauges() -> None:
    m = Metrics(process_metrics=False)
    m.set_source_commands("web", "pull", changed=3, removed=1)
    m.set_source_commands("web", "pull", changed=2, removed=0)
    common = {"name": "web", "public_key": "", "remote_addr": "", "trigger": "pull"}
    assert value(m, "etcha_sources_commands", mode="change", **common) == 2
    assert value(m, "etcha_sources_commands", mode="remove", **common) == 0


def test_shells_gauge_tracks_open_sessions() -> None:
    m = Metrics(process_metrics=False)
    m.shells("web", 1, remote_addr="a")
    m.shells("web", 1, remote_addr="a")
    m.shells("web", -1, remote_addr="a")
    assert value(m, "etcha_sources_shells", name="web", public_key="", remote_addr="a") == 1


def test_verify_failures_and_pulls_are_counted() -> None:
    m = Metrics(process_metrics=False)
    m.verify_failure("web", "expired")
    m.verify_failure("web", "expired")
    m.verify_failure("web", "no_match")
    for result in ("fetched", "not_modified", "not_modified", "error"):
        m.pull("web", result)
    assert value(m, "agent_verify_failures_total", source="web", reason="expired") == 2
    assert value(m, "agent_verify_failures_total", source="web", reason="no_match") == 1
    assert value(m, "agent_pull_total", source="web", result="not_modified") == 2
    assert value(m, "agent_pull_total", source="web", result="error") == 1


def test_unknown_pull_result_is_refused() -> None:
    with pytest.raises(ValueError, match="pull result"):
        Metrics(process_metrics=False).pull("web", "maybe")


def test_pattern_expiry_is_computed_at_scrape_time_and_can_be_cleared() -> None:
    now = [1000.0]
    m = Metrics(process_metrics=False, clock=lambda: now[0])
    m.pattern_expiry("web", 1600)
    m.pattern_expiry("db", None)
    assert value(m, "agent_pattern_expires_in_seconds", source="web") == 600
    now[0] = 1700.0
    assert value(m, "agent_pattern_expires_in_seconds", source="web") == -100
    m.pattern_expiry("web", None)
    assert value(m, "agent_pattern_expires_in_seconds", source="web") is None
    assert not any(k[0] == "agent_pattern_expires_in_seconds" for k in samples(m))


def test_process_metrics_are_on_the_instance_registry() -> None:
    names = {k[0] for k in samples(Metrics())}
    assert "process_resident_memory_bytes" in names
    assert "python_info" in names


def test_instances_do_not_share_series_or_use_the_global_registry() -> None:
    a, b = Metrics(), Metrics()
    a.pull("web", "fetched")
    assert value(a, "agent_pull_total", source="web", result="fetched") == 1
    assert value(b, "agent_pull_total", source="web", result="fetched") is None
    global_names = {f.name for f in REGISTRY.collect()}
    assert "agent_pull" not in global_names
    assert "etcha_commands" not in global_names


def test_counters_render_without_created_series() -> None:
    m = Metrics(process_metrics=False)
    m.pull("web", "fetched")
    m.source_run("web", "init", False)
    body, _ = m.render()
    assert b"agent_pull_total{" in body
    assert b"_created" not in body


def test_client_address_labels_are_bounded() -> None:
    m = Metrics(process_metrics=False)
    for i in range(3000):
        addr = f"10.0.{i // 256}.{i % 256}"
        m.source_run("web", "push", False, "k", addr)
        m.command_done(
            id="a", parent_id="", mode="change", error=False, source="web", remote_addr=addr
        )
        m.set_source_commands("web", "push", changed=1, removed=0, remote_addr=addr)
    addresses = {dict(labels).get("remote_addr") for (_, labels) in samples(m)} - {None}
    assert len(addresses) == MAX_ADDRESS_LABELS + 1
    assert "other" in addresses and "10.0.0.0" in addresses
    assert (
        value(
            m,
            "etcha_sources_total",
            error="0",
            name="web",
            public_key="k",
            remote_addr="other",
            trigger="push",
        )
        == 3000 - MAX_ADDRESS_LABELS
    )
    assert m.address_label("10.0.0.5") == "10.0.0.5"  # a labelled address keeps its label
    assert m.address_label("") == ""


def test_refused_connections_are_counted_by_reason() -> None:
    m = Metrics(process_metrics=False)
    m.connection_refused("address")
    m.connection_refused("address")
    m.connection_refused("total")
    assert value(m, "agent_connections_refused_total", reason="address") == 2
    assert value(m, "agent_connections_refused_total", reason="total") == 1
    with pytest.raises(ValueError, match="expected total or address"):
        m.connection_refused("10.0.0.1")
