"""The systemd units verify with systemd-analyze and say what the docs promise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO

ROOT = REPO
UNITS = ("agent.service", "agent-pull.service", "agent-pull.timer", "agent-publish.service")


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


def test_publish_service_contract_settings() -> None:
    lines = (ROOT / "systemd" / "agent-publish.service").read_text().splitlines()
    for line in (
        "Type=notify",
        "ExecStart=/usr/bin/agent -c /etc/agent/publish.jsonnet publish",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=always",
        "WorkingDirectory=/var/lib/agent-publish",
    ):
        assert line in lines, line


def _settings(unit: str, key: str) -> list[str]:
    """The values of ``key=`` in a unit file (space-separated lists split)."""
    values: list[str] = []
    for line in (ROOT / "systemd" / unit).read_text().splitlines():
        if line.startswith(f"{key}="):
            values.extend(line.split("=", 1)[1].split())
    return values


def _readme_install_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Install\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_every_unit_documentation_is_https_or_a_file_the_install_steps_put_in_place() -> None:
    installed: dict[str, str] = {}  # destination -> source, from `$ install … SRC DEST`
    for line in _readme_install_section().splitlines():
        words = line.split("#", 1)[0].split()
        if words[:2] == ["$", "install"] and len(words) >= 4:
            installed[words[-1]] = words[-2]
    for name in UNITS:
        docs = _settings(name, "Documentation")
        assert docs, f"{name} has no Documentation="
        for url in docs:
            if url.startswith("https://"):
                continue
            assert url.startswith("file:///"), f"{name}: {url} is neither https:// nor file://"
            path = url.removeprefix("file://")
            # The README's install steps copy the file there: `$ install … SOURCE DEST`.
            assert installed.get(path) is not None, (
                f"{name}: the README's install section does not put {path} in place"
            )
            assert (ROOT / installed[path]).is_file(), installed[path]


def test_private_tmp_is_set_and_the_docs_say_so() -> None:
    for name in ("agent.service", "agent-pull.service"):
        assert _settings(name, "PrivateTmp") == ["yes"], name
    for doc in ("README.md", "docs/quickstart.md"):
        text = (ROOT / doc).read_text()
        assert "PrivateTmp=yes" in text, f"{doc} does not mention PrivateTmp=yes"


def test_doc_examples_use_no_tmp_paths() -> None:
    # Under PrivateTmp=yes a host pattern's /tmp is the service's own: no example uses one.
    fence = re.compile(r"^```\w*\n(.*?)^```$", re.M | re.S)
    for doc in ("README.md", "docs/quickstart.md"):
        for block in fence.findall((ROOT / doc).read_text()):
            assert "/tmp" not in block, f"{doc}: an example uses /tmp:\n{block}"
