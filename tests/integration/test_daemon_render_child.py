"""Issue 14, contract 5: a real `agent run` renders tokens in short-lived children.

The daemon process never maps the Jsonnet engine (``_gojsonnet``, a Go runtime) after a push and
pulls; a render error reaches the log with the message an in-process render gives; once the runs
are over, the daemon has no child left (render children and the persistent shell are gone).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from support import (
    client_config,
    config_doc,
    daemon,
    free_port,
    run_agent,
    sign_pattern_file,
    wait_for,
    write_json,
)

from agent.cli.admit import admit_offline
from agent.config.schema import config_from_dict
from agent.core.errors import RenderError
from agent.pattern.load import load_from_token

pytestmark = pytest.mark.integration

# Renders on the client (no RND_FAIL) and fails on the daemon (RND_FAIL=yes in its environment).
FAILS_ON_HOST = (
    "local env = std.native('getEnv')('RND_FAIL', 'no');\n"
    "local src = std.native('getConfig')().vars.source;\n"
    "if env == 'yes' then error 'no render on ' + src else {run: [{id: 'x', change: 'true'}]}\n"
)


def touch_pattern(path: Path, marker: Path) -> Path:
    path.write_text(
        f"{{run: [{{id: 'touch', check: 'test -f {marker}', change: 'touch {marker}'}}, "
        f"{{id: 'twice', check: 'true', change: 'true'}}]}}\n"
    )
    return path


def children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def test_daemon_renders_in_children_and_never_loads_the_jsonnet_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulled_marker, pushed_marker = tmp_path / "pulled", tmp_path / "pushed"
    sign_pattern_file(
        touch_pattern(tmp_path / "pull.jsonnet", pulled_marker), tmp_path / "pull.jwt"
    )
    (tmp_path / "broken.jsonnet").write_text(FAILS_ON_HOST)
    broken = sign_pattern_file(tmp_path / "broken.jsonnet", tmp_path / "broken.jwt")
    sources = {
        "core": {"allowPush": True},
        "pulled": {"pullPaths": [str(tmp_path / "pull.jwt")]},
        "broken": {"pullPaths": [str(tmp_path / "broken.jwt")]},
    }
    port = free_port()
    doc = config_doc(tmp_path, sources, run={"listenAddress": f"127.0.0.1:{port}"})
    doc["run"]["tlsDisable"] = True
    cfg = write_json(tmp_path / "server.json", doc)

    # The message an in-process render of the broken token gives on the host.
    monkeypatch.setenv("RND_FAIL", "yes")
    config = config_from_dict(doc)
    with pytest.raises(RenderError) as info:
        load_from_token(admit_offline(broken, config, "broken"), config=config, source="broken")
    monkeypatch.delenv("RND_FAIL")
    expected = f"Source broken: token did not render: {info.value}"
    assert "no render on broken" in expected

    with daemon(tmp_path, cfg, port, env={"RND_FAIL": "yes"}) as (proc, log):
        res = run_agent(
            "-c",
            str(client_config(tmp_path)),
            "push",
            "-h",
            f"http://127.0.0.1:{port}",
            "core",
            str(touch_pattern(tmp_path / "push.jsonnet", pushed_marker)),
            cwd=tmp_path,
        )
        assert res.returncode == 0, res.stdout + res.stderr
        assert pushed_marker.exists()
        wait_for(pulled_marker.exists, "the pulled pattern to run")
        wait_for(lambda: expected in log.read_text(), f"{expected!r} in the log")

        maps = Path(f"/proc/{proc.pid}/maps").read_text()
        assert "python" in maps  # the maps are real
        assert "gojsonnet" not in maps
        wait_for(lambda: not children(proc.pid), "the daemon to have no child process left")
        assert os.path.exists(f"/proc/{proc.pid}")
