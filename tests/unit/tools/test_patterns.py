"""The sample patterns in patterns/ pass `agent lint` and `agent test` without touching the host.

They import the standard library shipped in the package (``etcha/etcha.libsonnet``), so they
work straight from a clone, without `agent init`. Under `agent test` (``vars.test``) the library
moves every path under ``vars.root`` (a private temporary directory per pattern, or
``sources.test.vars.root`` when the config sets it), and the root-only parts (useradd, apt-get,
systemctl, chown) are left out. On a host the same files render to the real paths. No config
sets ``vars.agentBin``: the agent passes its own executable.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from support import REPO, run_agent

SAMPLES = REPO / "patterns"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    proj = tmp_path / "proj"
    assert run_agent("init", str(proj), cwd=tmp_path).returncode == 0
    (proj / "patterns" / "motd.jsonnet").unlink()  # only the samples from patterns/
    for item in SAMPLES.iterdir():
        shutil.copy2(item, proj / "patterns" / item.name)
    sandbox = tmp_path / "sandbox"
    sandbox.mkdir()
    cfg = {"sources": {"test": {"vars": {"root": str(sandbox)}}}}
    (proj / "agent.jsonnet").write_text(json.dumps(cfg))
    return proj


def test_samples_cover_user_ssh_package_service_and_cron() -> None:
    names = sorted(p.name for p in SAMPLES.glob("*.jsonnet"))
    assert names == ["cron-backup.jsonnet", "nginx-site.jsonnet", "user-ssh.jsonnet"]


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A directory holding only a copy of patterns/: no lib/, no config, no `agent init`."""
    root = tmp_path / "clone"
    shutil.copytree(SAMPLES, root / "patterns")
    return root


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck (.ci/run installs it)")
def test_samples_pass_lint_without_init(bare: Path) -> None:
    res = run_agent("lint", "patterns", cwd=bare)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.strip() == "Linted 4 files: 0 findings"
    assert sorted(p.name for p in bare.iterdir()) == ["patterns"]


def test_samples_pass_agent_test_without_init_in_private_temp_dirs(
    bare: Path, tmp_path: Path
) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env = {"TMPDIR": str(scratch)}
    res = run_agent("test", "patterns", cwd=bare, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Tested 7 commands in 3 patterns: no failures" in res.stdout
    # every path went into a per-pattern directory under TMPDIR, removed afterwards
    assert list(scratch.iterdir()) == []
    assert sorted(p.name for p in bare.iterdir()) == ["patterns"]


def test_render_with_vars_test_but_no_directory_refuses(bare: Path) -> None:
    res = run_agent("render", "-s", "test", "patterns/cron-backup.jsonnet", cwd=bare)
    assert res.returncode == 1
    assert "vars.test needs vars.root or vars.testDir" in res.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck (.ci/run installs it)")
def test_samples_pass_lint_with_format_check(project: Path) -> None:
    res = run_agent("lint", "-f", "patterns", cwd=project)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 findings" in res.stdout


def test_samples_pass_agent_test_in_a_sandbox(project: Path, tmp_path: Path) -> None:
    res = run_agent("test", "patterns", cwd=project)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "in 3 patterns: no failures" in res.stdout
    sandbox = tmp_path / "sandbox"
    # the config change triggered the reload command; the test removed the files and dirs it
    # manages (the parent directories the library made under the root stay)
    assert (sandbox / "reloads").read_text().strip()
    assert (sandbox / "etc" / "cron.d").is_dir()
    assert list((sandbox / "etc" / "cron.d").iterdir()) == []
    assert not (sandbox / "home" / "deploy" / ".ssh").exists()


def test_samples_render_real_paths_and_root_parts_on_a_host(project: Path) -> None:
    def ids(name: str) -> list[str]:
        res = run_agent("render", f"patterns/{name}", cwd=project)
        assert res.returncode == 0, res.stderr
        return [c["id"] for c in json.loads(res.stdout)["run"]]

    assert ids("user-ssh.jsonnet") == [
        "user deploy",
        "dir /home/deploy/.ssh",
        "file /home/deploy/.ssh/authorized_keys",
    ]
    assert ids("nginx-site.jsonnet") == [
        "apt nginx",
        "file /etc/nginx/conf.d/site.conf",
        "reload nginx",
        "nginx running",
    ]
    assert ids("cron-backup.jsonnet") == [
        "file /usr/local/sbin/backup-etc",
        "file /etc/cron.d/backup-etc",
    ]


def test_config_change_triggers_reload_only_when_it_changes(project: Path, tmp_path: Path) -> None:
    # Run the nginx sample for real in the sandbox (source "test" => sandboxed): the first run
    # writes the config and reloads; the second changes nothing and does not reload.
    first = run_agent("local", "-s", "test", "patterns/nginx-site.jsonnet", cwd=project)
    assert first.returncode == 0, first.stderr
    assert "reload nginx" in first.stdout
    reloads = (tmp_path / "sandbox" / "reloads").read_text().splitlines()
    second = run_agent("local", "-s", "test", "patterns/nginx-site.jsonnet", cwd=project)
    assert second.returncode == 0, second.stderr
    assert "reload nginx" not in second.stdout
    assert (tmp_path / "sandbox" / "reloads").read_text().splitlines() == reloads
