"""Run the installed CLI as a user would: ``python -m agent …`` in a subprocess.

The agent's own ``AGENT_*`` settings from the test runner's environment are dropped, so a
developer's shell cannot change what a test sees.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_agent(
    *args: str, cwd: Path | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` in ``cwd`` and capture its output as text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AGENT_")}
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
