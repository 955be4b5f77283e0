"""The systemd units verify with systemd-analyze and say what the docs promise."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

ROOT = REPO
UNITS = ("agent.service", "agent-pull.service", "agent-pull.timer")


def _installed_agent() -> Path:
    candidate = Path(sys.executable).parent / "agent"
    assert candidate.exists(), f"the agent console script is not installed at {candidate}"
    return candidate


@pytest.mark.skipif(
    shutil.which("systemd-analyze") is None,
    reason="systemd-analyze is not installed (.ci/run installs the systemd package)",
)
def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    agent = _installed_agent()
    copies = []
    for name in UNITS:
        text = (ROOT / "systemd" / name).read_text()
        (tmp_path / name).write_text(text.replace("/usr/bin/agent", str(agent)))
        copies.append(str(tmp_path / name))
    proc = subprocess.run(
        ["systemd-analyze", "verify", *copies],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    # systemd-analyze prints warnings on stderr even when it exits 0; there must be none
    # about our units.
    ours = [line for line in proc.stderr.splitlines() if str(tmp_path) in line]
    assert ours == []


def test_service_contract_settings() -> None:
    text = (ROOT / "systemd" / "agent.service").read_text()
    for line in (
        "Type=notify",
        "ExecStart=/usr/bin/agent -c /etc/agent/agent.jsonnet run",
        "StateDirectory=agent",
        "ConfigurationDirectory=agent",
        "Restart=always",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ):
        assert line in text.splitlines(), line
    pull = (ROOT / "systemd" / "agent-pull.service").read_text()
    assert "ExecStart=/usr/bin/agent -c /etc/agent/agent.jsonnet run -o" in pull.splitlines()
    assert "TimeoutStartSec=infinity" in text.splitlines()  # READY=1 follows the first runs
    for unit in (text, pull):
        settings = [line for line in unit.splitlines() if not line.startswith("#")]
        # Hardening that would stop the agent from configuring its host is not set.
        for forbidden in ("UMask=0077", "ProtectKernelModules=yes", "ProtectClock=yes"):
            assert forbidden not in settings, forbidden
        assert not any(line.startswith(("ProtectSystem=", "NoNewPrivileges=")) for line in settings)
    timer = (ROOT / "systemd" / "agent-pull.timer").read_text()
    assert "OnUnitActiveSec=5min" in timer.splitlines()
