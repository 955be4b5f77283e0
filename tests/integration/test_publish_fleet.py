"""A host pulls from a mirror that `agent publish` keeps fresh, over hours compressed into seconds.

The publisher (service mode: checkFrequency 500ms, expiresIn 4s, resignBefore 3s) re-signs the
artifact; the host (`agent run`, requireExp, pulling every 500ms) takes each re-signed token as the
source's current token: saved to stateDir, the mark moves, the gauges follow. Over three expiry
periods its stored token never expires, and its one change ran exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, agent_env, daemon, free_port, listener_config, wait_port, write_json

from agent.jws.tokens import decode_token

pytestmark = pytest.mark.integration

PATTERN = (
    "{run: [{id: 'motd', check: 'test -f %(root)s/motd',"
    " change: 'echo ran >> %(root)s/changes; touch %(root)s/motd'}]}"
)


def scrape(port: int, key: str) -> str:
    url = f"http://127.0.0.1:{port}/etcha/v1/system/metrics?key={key}"
    with urllib.request.urlopen(url, timeout=5) as resp:
        return str(resp.read().decode())


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_host_keeps_applying_a_republished_pattern_over_three_expiry_periods(
    tmp_path: Path,
) -> None:
    host_dir, pub_dir = tmp_path / "host", tmp_path / "pub"
    host_dir.mkdir()
    pub_dir.mkdir()
    mirror = tmp_path / "mirror" / "web.jwt"
    (pub_dir / "web.jsonnet").write_text(PATTERN % {"root": host_dir})
    pub_port, host_port = free_port(), free_port()
    pub_config = write_json(
        pub_dir / "publish.json",
        {
            "build": {"signingKey": RIGHT_PRIV},
            "run": {"systemMetricsKey": "pk"},
            "publish": {
                "checkFrequency": "500ms",
                "metricsAddress": f"127.0.0.1:{pub_port}",
                "artifacts": {
                    "web": {
                        "pattern": "web.jsonnet",
                        "dest": [str(mirror)],
                        "expiresIn": "4s",
                        "resignBefore": "3s",
                    }
                },
            },
        },
    )
    log = pub_dir / "publish.log"
    with log.open("w") as fh:
        publisher = subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(pub_config), "publish"],
            cwd=pub_dir,
            env=agent_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_port(pub_port, publisher, log)
        deadline = time.monotonic() + 15
        while not mirror.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        host_config = listener_config(
            host_dir,
            host_port,
            {"web": {"pullPaths": [str(mirror)], "runFrequency": "500ms", "requireExp": True}},
            systemMetricsKey="hk",
        )
        with daemon(host_dir, host_config, host_port, clean_exit=True) as host:
            state = host_dir / "state" / "web.jwt"
            jtis: set[str] = set()
            iats: list[int] = []
            lapses = []
            end = time.monotonic() + 12  # three expiry periods of 4s
            while time.monotonic() < end:
                if state.exists():
                    claims = decode_token(state.read_text()).claims
                    jtis.add(str(claims.get("jti")))
                    iats.append(int(claims["iat"]))
                    if claims["exp"] <= time.time():
                        lapses.append(claims["exp"])
                time.sleep(0.2)
            meta = json.loads((host_dir / "state" / "web.meta.json").read_text())
            host_metrics = scrape(host_port, "hk")
            pub_metrics = scrape(pub_port, "pk")
            with pytest.raises(urllib.error.HTTPError) as refused:
                scrape(pub_port, "wrong")
            refused.value.close()
            assert refused.value.code == 401
            host_log = host.log.read_text()
        assert lapses == [], f"the host's stored token expired: {lapses}\n{host_log}"
        assert len(jtis) >= 3, f"expected at least 3 re-signed tokens in stateDir, got {jtis}"
        assert (host_dir / "changes").read_text() == "ran\n"  # no change re-ran
        assert meta["high_water_iat"] > iats[0] > 0  # the rollback mark moved with it
        assert "pulled a re-signed token of the same pattern; nothing re-runs" in host_log
        left = sample(host_metrics, 'etcha_source_token_expires_in_seconds{source="web"}')
        assert left is not None and 0 < left <= 4, host_metrics
        pub_left = sample(pub_metrics, "agent_publish_expires_in_seconds{")
        assert pub_left is not None and 0 < pub_left <= 4, pub_metrics
        resigns = sample(pub_metrics, 'agent_publish_total{artifact="web",dest=')
        assert resigns is not None
        assert 'result="published"' in pub_metrics and "_created" not in pub_metrics
        assert (sample(pub_metrics, "agent_publish_last_success_timestamp_seconds") or 0) > 0
    finally:
        if publisher.poll() is None:
            publisher.send_signal(signal.SIGTERM)
        assert publisher.wait(timeout=20) == 0, log.read_text()
    text = log.read_text()
    assert text.count("resign (expires in") >= 3, text
    assert "Stopped" in text
    assert os.stat(mirror).st_mode & 0o777 == 0o644


def test_service_rereads_its_config_on_sighup_and_drains_on_sigterm(tmp_path: Path) -> None:
    (tmp_path / "web.jsonnet").write_text(PATTERN % {"root": tmp_path})
    first, second = tmp_path / "a.jwt", tmp_path / "b.jwt"
    web: dict[str, Any] = {"pattern": "web.jsonnet", "dest": [str(first)], "expiresIn": "1h"}
    doc = {
        "build": {"signingKey": RIGHT_PRIV},
        "publish": {"checkFrequency": "1h", "artifacts": {"web": web}},
    }
    config = write_json(tmp_path / "publish.json", doc)
    log = tmp_path / "publish.log"
    with log.open("w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent", "-c", str(config), "publish"],
            cwd=tmp_path,
            env=agent_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 15
        while not first.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.exists(), log.read_text()
        web["dest"] = [str(first), str(second)]
        write_json(config, doc)
        proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while not second.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert second.exists(), log.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, log.read_text()
    text = log.read_text()
    assert "SIGHUP: config reloaded; checking now" in text
    assert f"Publish web to {second}: resign (nothing published)" in text
    assert "Received SIGTERM" in text and "Stopped" in text
