"""The shell blocks of README.md and docs/quickstart.md run as written.

Every ```` ```sh ```` block of a document is run, in order, as one ``bash -e`` script in a fresh
temporary directory, with this checkout's ``agent`` first on PATH and a temporary ``HOME``: what
a reader does when they paste the blocks into a shell in an empty directory. The only variable
set is ``PORT`` (the README documents it), the listener port of the daemon the tutorial starts,
so the test can pick a free one. Nothing is skipped; blocks with a ``$`` prompt (```` ```console
````, the checkout and host-install commands) are not shell blocks and are not run.

The tutorial's daemon is stopped by the script's own ``trap``; the test checks that nothing of
the script's process group is left running (and kills it if so, failing the test).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from support import REPO, agent_env, free_port

DOCS = ("README.md", "docs/quickstart.md")
_BLOCK = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def sh_blocks(text: str) -> list[str]:
    """The bodies of the ```` ```sh ```` blocks of a Markdown text, in order."""
    return [match.group(1) for match in _BLOCK.finditer(text)]


def test_sh_blocks_are_found_in_order() -> None:
    text = "a\n```sh\necho 1\n```\n```console\n$ no\n```\n```sh\necho 2\necho 3\n```\n"
    assert sh_blocks(text) == ["echo 1\n", "echo 2\necho 3\n"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def _run_script(
    script: str, work: Path, home: Path
) -> tuple[subprocess.CompletedProcess[str], bool]:
    """Run ``script``; return its result and whether its process group outlived it by 10 s.

    Output goes to files, not pipes, so a background process that keeps them open cannot hold
    the test up: the script is done when bash exits.
    """
    env = agent_env({"HOME": str(home), "PORT": str(free_port())})
    out_path, err_path = home / "script.out", home / "script.err"
    with out_path.open("w") as out, err_path.open("w") as err:
        proc = subprocess.Popen(
            ["bash", "-e", "-c", script],
            cwd=work,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=100)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            output = f"{out_path.read_text()}\n{err_path.read_text()}"
            raise AssertionError(f"the blocks did not finish in 100s:\n{output}") from None
    deadline = time.monotonic() + 10
    while _group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    leftover = _group_alive(proc.pid)
    if leftover:
        os.killpg(proc.pid, signal.SIGKILL)
    done = subprocess.CompletedProcess(
        proc.args, proc.returncode, out_path.read_text(), err_path.read_text()
    )
    return done, leftover


#: Absolute paths the blocks must not touch: they promise to write only under their directory.
_SYSTEM_PATH = re.compile(r"(?<![\w$./-])/(etc|opt|usr|var|tmp|root|home|srv)/")


@pytest.mark.parametrize("doc", DOCS)
def test_doc_sh_blocks_name_no_system_paths(doc: str) -> None:
    for block in sh_blocks((REPO / doc).read_text()):
        code = "\n".join(line.split("  #")[0] for line in block.splitlines())
        assert not _SYSTEM_PATH.search(code), f"{doc}: a sh block names a system path:\n{block}"


@pytest.mark.parametrize("doc", DOCS)
def test_doc_sh_blocks_run_as_written(doc: str, tmp_path: Path) -> None:
    blocks = sh_blocks((REPO / doc).read_text())
    assert blocks, f"{doc} has no sh blocks"
    test_doc_sh_blocks_name_no_system_paths(doc)  # never run blocks that would touch the host
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    done, leftover = _run_script("\n".join(blocks), work, home)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert not leftover, f"{doc}: the blocks left processes running"
    # What the tutorial claims happened, happened: the pattern ran locally and by push.
    assert "Changed 1: file" in done.stdout
    assert "host1:" in done.stdout and "No changes" in done.stdout
    motd = next(work.rglob("motd"))
    assert motd.read_text() == "managed by agent\n"
