"""``agent delegate`` and ``agent revoke`` (:mod:`agent.cli.trust_cmds`) driven in-process.

Usage errors exit 2 with a message that says what was expected; files that cannot be read or
written exit 1; the tokens printed or written are decoded and their claims checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.cli import main
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import decode_token, sign_token

ROOT_PRIV, ROOT_PUB = generate_keys("ed25519", "root")
TEAM_PRIV, TEAM_PUB = generate_keys("ed25519", "team")
_, CI_PUB = generate_keys("ed25519", "ci")


@pytest.fixture(autouse=True)
def restore_agent_logger() -> Iterator[None]:
    """``main`` sets up the ``agent`` logger (handler, level, no propagation): undo it after each
    test so later tests' log capture still works."""
    root = logging.getLogger("agent")
    saved = (list(root.handlers), root.level, root.propagate)
    yield
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    root.propagate = saved[2]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["-l", "none", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def delegate(*flags: str, key: str = ROOT_PRIV) -> list[str]:
    base = ["delegate", "--subject", CI_PUB, "--key", key]
    defaults = {"--sources": "web", "--actions": "push", "--expires": "1h"}
    for flag, value in defaults.items():
        if flag not in flags:
            base += [flag, value]
    return [*base, *flags]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--sources", " , "), "--sources: expected a comma-separated list"),
        (("--sources", "web,web"), "--sources: expected distinct names"),
        (("--actions", "push,fly"), "--actions: expected names among push"),
        (("--expires", "0s"), "--expires: expected a lifetime > 0"),
    ],
)
def test_delegate_refuses_bad_flag_values_as_usage_errors(
    capsys: pytest.CaptureFixture[str], flags: tuple[str, ...], message: str
) -> None:
    code, out, err = run(capsys, *delegate(*flags))
    assert code == 2
    assert message in err
    assert out == ""


def test_delegate_with_delegate_grants_it_and_writes_the_link_with_o(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out_file = tmp_path / "team.jwt"
    code, out, _ = run(
        capsys, *delegate("--delegate", "--expires", "2d", "-o", str(out_file), key=ROOT_PRIV)
    )
    assert code == 0
    assert out == f"Wrote {out_file}\n"
    token = decode_token(out_file.read_text().strip())
    assert token.header["typ"] == "etcha-delegation+jwt"
    assert token.claims["etchaDelegation"] == {"sources": ["web"], "actions": ["push", "delegate"]}
    assert token.claims["exp"] - token.claims["iat"] == pytest.approx(2 * 86400, abs=2)
    assert ROOT_PRIV not in out


def test_delegate_reads_the_signing_key_from_a_file_and_reports_one_it_cannot_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key_file = tmp_path / "root.key"
    key_file.write_text(ROOT_PRIV + "\n")
    code, out, _ = run(capsys, *delegate(key=str(key_file)))
    assert code == 0
    assert decode_token(out.strip()).claims["sub"] == CI_PUB
    code, _, err = run(capsys, "-l", "error", *delegate(key=str(tmp_path / "missing.key")))
    assert code == 1
    assert "--key: cannot read" in err and "missing.key" in err


def _team_config(tmp_path: Path, parent: str) -> Path:
    (tmp_path / "team.key").write_text(TEAM_PRIV + "\n")
    (tmp_path / "parent.jwt").write_text(parent + "\n")
    config = tmp_path / "team.json"
    config.write_text(
        json.dumps(
            {
                "build": {
                    "signingKeyPath": str(tmp_path / "team.key"),
                    "delegationChain": [str(tmp_path / "parent.jwt")],
                }
            }
        )
    )
    return config


def _parent(capsys: pytest.CaptureFixture[str], subject: str, *flags: str) -> str:
    code, out, err = run(
        capsys,
        "delegate",
        "--subject",
        subject,
        "--key",
        ROOT_PRIV,
        "--sources",
        "web",
        "--expires",
        "1h",
        *flags,
    )
    assert code == 0, err
    return out.strip()


def test_delegate_refuses_actions_its_parent_link_does_not_grant(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = _team_config(tmp_path, _parent(capsys, TEAM_PUB, "--actions", "push"))
    code, _, err = run(
        capsys, "-c", str(config), "delegate", "--subject", CI_PUB, "--sources", "web",
        "--actions", "push", "--expires", "1h",
    )  # fmt: skip
    assert code == 2
    assert "the parent link grants actions ['push']; expected delegate and a subset" in err


def test_delegate_with_a_configured_chain_it_cannot_read_is_an_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = _team_config(tmp_path, _parent(capsys, TEAM_PUB, "--actions", "push,delegate"))
    (tmp_path / "parent.jwt").unlink()  # build.delegationChain names a file that is gone
    code = main(
        ["-c", str(config), "delegate", "--subject", CI_PUB, "--sources", "web",
         "--actions", "push", "--expires", "1h"]
    )  # fmt: skip
    out, err = capsys.readouterr()  # the error line is logged (no -l none here)
    assert code != 0
    assert out == ""
    assert "build.delegationChain[0]: cannot read" in err


def test_delegate_signs_with_build_signing_key_and_ignores_a_parent_for_another_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # The chain ends in a link to CI, not to the team key that signs: no parent limit applies.
    config = _team_config(tmp_path, _parent(capsys, CI_PUB, "--actions", "push"))
    code, out, err = run(
        capsys, "-c", str(config), "delegate", "--subject", CI_PUB, "--sources", "db",
        "--actions", "pull", "--expires", "90d",
    )  # fmt: skip
    assert code == 0, err
    claims = decode_token(out.strip()).claims
    assert claims["etchaDelegation"] == {"sources": ["db"], "actions": ["pull"]}
    assert claims["exp"] - claims["iat"] == pytest.approx(90 * 86400, abs=2)
    assert "clamped" not in err


def test_revoke_refuses_a_before_that_is_not_now_or_a_utc_time(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for before in ("yesterday", "2030-01-01T00:00:00"):
        code, _, err = run(
            capsys, "revoke", "--key", "ci", "--before", before, "--signing-key", ROOT_PRIV
        )
        assert code == 2
        assert "--before: expected now or an RFC 3339 UTC time" in err


def test_revoke_refuses_a_merge_file_that_is_missing_or_not_a_revocation_list(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    base = ("revoke", "--key", "ci", "--before", "now", "--signing-key", ROOT_PRIV, "--merge")
    code, _, err = run(capsys, "-l", "error", *base, str(tmp_path / "missing.jwt"))
    assert code == 1 and "--merge: cannot read" in err
    other = tmp_path / "delegation.jwt"
    other.write_text(_parent(capsys, CI_PUB, "--actions", "push"))
    code, _, err = run(capsys, *base, str(other))
    assert code == 2 and "--merge: expected a revocation list (etcha-revocations+jwt)" in err
    broken = tmp_path / "broken.jwt"
    claims = {"iat": 1, "etchaRevocations": [{"key": "a"}]}
    broken.write_text(sign_token(claims, parse_signing_key(ROOT_PRIV), typ="etcha-revocations+jwt"))
    code, _, err = run(capsys, *base, str(broken))
    assert code == 2 and f"--merge: {broken}:" in err


def test_revoke_with_now_revokes_tokens_issued_this_second_and_reports_an_unwritable_output(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, out, _ = run(
        capsys, "revoke", "--key", "ci", "--before", "now", "--signing-key", ROOT_PRIV
    )
    assert code == 0
    token = decode_token(out.strip())
    (entry,) = token.claims["etchaRevocations"]
    assert entry["key"] == "ci"
    code, _, err = run(
        capsys, "-l", "error", "revoke", "--key", "ci", "--before", "now", "--signing-key",
        ROOT_PRIV, "-o", str(tmp_path / "no" / "such" / "dir" / "list.jwt"),
    )  # fmt: skip
    assert code == 1
    assert "revoke: cannot write" in err


def test_delegate_refuses_sources_wider_than_its_parent_and_clamps_exp_to_the_parents(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    parent = _parent(capsys, TEAM_PUB, "--actions", "push,delegate")
    config = _team_config(tmp_path, parent)
    base = ("-c", str(config), "delegate", "--subject", CI_PUB, "--actions", "push")
    code, _, err = run(capsys, *base, "--sources", "web,db", "--expires", "1h")
    assert code == 2
    assert "the parent link grants sources ['web'], got ['web', 'db']" in err
    code, out, err = run(capsys, *base, "--sources", "web", "--expires", "90d")
    assert code == 0
    assert decode_token(out.strip()).claims["exp"] == decode_token(parent).claims["exp"]
    assert "Note: --expires clamped to the parent link's exp" in err


def test_revoke_merge_keeps_other_entries_and_the_latest_time_for_the_same_key(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    listed = tmp_path / "list.jwt"
    signing = ("--signing-key", ROOT_PRIV)
    code, _, _ = run(
        capsys, "revoke", "--key", "a", "--before", "2030-01-01T00:00:00Z", *signing,
        "-o", str(listed),
    )  # fmt: skip
    assert code == 0
    code, out, _ = run(
        capsys, "revoke", "--key", "b", "--before", "2029-01-01T00:00:00+00:00", "--merge",
        str(listed), *signing,
    )  # fmt: skip
    assert code == 0
    assert decode_token(out.strip()).claims["etchaRevocations"] == [
        {"key": "a", "before": "2030-01-01T00:00:00Z"},
        {"key": "b", "before": "2029-01-01T00:00:00Z"},
    ]
    code, out, _ = run(
        capsys, "revoke", "--key", "a", "--before", "2029-01-01T00:00:00Z", "--merge",
        str(listed), *signing,
    )  # fmt: skip
    assert decode_token(out.strip()).claims["etchaRevocations"] == [
        {"key": "a", "before": "2030-01-01T00:00:00Z"}
    ]
