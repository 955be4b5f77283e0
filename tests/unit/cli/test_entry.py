"""The executable's entry (agent.__main__): the garbage collector around start-up and exit."""

from __future__ import annotations

import gc
import subprocess
import sys

import pytest
from support import run_python

from agent import __version__
from agent.cli import main

# Runs the entry in a fresh interpreter and reports the collector's state at three points: when
# the CLI module starts loading, when the verb's handler runs, and after the entry returns.
_PROBE = """
import gc, sys
seen = {}
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "agent.cli" and "import" not in seen:
            seen["import"] = gc.isenabled()
        return None
sys.meta_path.insert(0, Probe())
def profile(frame, event, arg):
    if event == "call" and frame.f_code.co_name == "cmd_version":
        seen["handler"] = (gc.isenabled(), gc.get_freeze_count())
sys.setprofile(profile)
sys.argv = ["agent", "version"]
from agent.__main__ import main
rc = main()
sys.setprofile(None)
print("RESULT", rc, seen["import"], seen["handler"][0], seen["handler"][1] > 1000,
      gc.isenabled(), gc.get_freeze_count() >= seen["handler"][1])
"""


def test_entry_loads_with_the_collector_off_and_runs_the_verb_with_it_on() -> None:
    proc = run_python(_PROBE)
    assert proc.returncode == 0, proc.stderr
    assert f"agent {__version__}" in proc.stdout
    # rc 0; off while agent.cli loads; on in the handler, with start-up frozen; on at exit, with
    # the verb's live objects frozen too (the interpreter's last collection skips them)
    assert proc.stdout.splitlines()[-1] == "RESULT 0 False True True True True"


def test_module_entry_keeps_the_exit_code_and_output() -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "agent", "version"], capture_output=True, text=True, check=False
    )
    bad = subprocess.run(
        [sys.executable, "-m", "agent", "jwt", "/nonexistent/token.jwt"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, f"agent {__version__}")
    assert bad.returncode == 1
    assert bad.stderr.startswith("ERROR: ")


@pytest.mark.parametrize(("argv", "calls"), [(["version"], 1), (["--version"], 0), ([], 0)])
def test_loaded_is_called_once_before_a_handler_runs(argv: list[str], calls: int) -> None:
    seen: list[bool] = []
    frozen = gc.get_freeze_count()
    assert main(argv, loaded=lambda: seen.append(True)) == 0
    assert seen == [True] * calls
    # called from Python without ``loaded``, the CLI leaves the collector alone
    assert main(["version"]) == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen
