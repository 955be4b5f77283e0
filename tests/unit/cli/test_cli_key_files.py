"""Key files: ``generate-keys --private-file/--public-file`` and the open signing-key warning."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from support import run_agent

from agent.jws.keys import parse_signing_key, parse_verify_key

FLAGS = ("--private-file", "signing.key", "--public-file", "public.key")


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_keys_writes_private_0600_and_public_0644_pair(tmp_path: Path) -> None:
    old = os.umask(0)  # the modes must not depend on the caller's umask
    try:
        out = run_agent("generate-keys", "demo", *FLAGS, cwd=tmp_path)
    finally:
        os.umask(old)
    assert out.returncode == 0, out.stderr
    private, public = tmp_path / "signing.key", tmp_path / "public.key"
    assert (_mode(private), _mode(public)) == (0o600, 0o644)
    assert "privateKey" not in out.stdout and private.read_text() not in out.stdout
    assert out.stdout == (
        "Wrote signing.key (private key, mode 0600) and public.key (public key, mode 0644)\n"
    )
    key = parse_signing_key(private.read_text())
    assert private.read_text().endswith(":demo") and public.read_text().endswith(":demo")
    assert parse_verify_key(public.read_text()).verify(key.sign(b"x"), b"x")
    # No temp files are left beside the keys.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["public.key", "signing.key"]


def test_generate_keys_refuses_to_overwrite_either_file_without_force(tmp_path: Path) -> None:
    (tmp_path / "public.key").write_text("keep me")
    out = run_agent("generate-keys", "demo", *FLAGS, cwd=tmp_path)
    assert out.returncode == 2
    assert "public.key exists; use --force to overwrite it" in out.stderr
    assert (tmp_path / "public.key").read_text() == "keep me"
    assert not (tmp_path / "signing.key").exists()  # nothing is written when one file exists


def test_generate_keys_force_replaces_files_and_tightens_the_private_mode(tmp_path: Path) -> None:
    (tmp_path / "signing.key").write_text("old")
    (tmp_path / "signing.key").chmod(0o644)
    (tmp_path / "public.key").write_text("old")
    out = run_agent("generate-keys", "demo", *FLAGS, "--force", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert _mode(tmp_path / "signing.key") == 0o600
    assert (tmp_path / "signing.key").read_text().startswith("ed25519private:")
    assert (tmp_path / "public.key").read_text().startswith("ed25519public:")


def test_generate_keys_needs_both_file_flags(tmp_path: Path) -> None:
    out = run_agent("generate-keys", "--private-file", "signing.key", cwd=tmp_path)
    assert out.returncode == 2
    assert "--private-file and --public-file go together" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_keys_refuses_one_file_for_both_keys(tmp_path: Path) -> None:
    out = run_agent("generate-keys", "--private-file", "k", "--public-file", "./k", cwd=tmp_path)
    assert out.returncode == 2
    assert "are both k" in out.stderr
    assert list(tmp_path.iterdir()) == []


def test_generate_keys_without_file_flags_prints_the_json_pair(tmp_path: Path) -> None:
    out = run_agent("generate-keys", "demo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert list(json.loads(out.stdout)) == ["privateKey", "publicKey"]
    assert list(tmp_path.iterdir()) == []


def _build_project(tmp_path: Path, key_mode: int) -> Path:
    assert run_agent("generate-keys", "b", *FLAGS, cwd=tmp_path).returncode == 0
    (tmp_path / "signing.key").chmod(key_mode)
    (tmp_path / "agent.jsonnet").write_text(
        "{ build: { signingKeyPath: 'signing.key' },"
        " run: { verifyKeys: [importstr 'public.key'] } }"
    )
    (tmp_path / "p.jsonnet").write_text("{ run: [{ id: 'a', change: 'true' }] }")
    return tmp_path


def test_build_warns_once_when_the_signing_key_is_readable_by_others(tmp_path: Path) -> None:
    project = _build_project(tmp_path, 0o644)
    out = run_agent("build", "p.jsonnet", "p.jwt", cwd=project)
    assert out.returncode == 0, out.stderr
    key = project / "signing.key"
    warnings = [line for line in out.stderr.splitlines() if "readable by group or others" in line]
    assert len(warnings) == 1, out.stderr
    # The log format's prefix (level, maybe a timestamp) is the logger's; the message is ours.
    assert "WARNING" in warnings[0]
    assert warnings[0].endswith(
        f"signing key {key} is readable by group or others (mode 0644); fix: chmod 600 {key}"
    )
    assert (project / "p.jwt").exists()


def test_build_is_quiet_about_a_0600_signing_key(tmp_path: Path) -> None:
    project = _build_project(tmp_path, 0o600)
    out = run_agent("build", "p.jsonnet", "p.jwt", cwd=project)
    assert out.returncode == 0, out.stderr
    assert "readable by group or others" not in out.stderr
