"""`agent publish`: the decision, re-sign vs rebuild, file destinations (real files, a clock)."""

from __future__ import annotations

import asyncio
import base64
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from support import RIGHT_PRIV, RIGHT_PUB, WRONG_PRIV, run_agent, write_json

from agent.config.schema import config_from_dict
from agent.core.errors import ConfigError
from agent.jws.keys import parse_signing_key, parse_verify_key
from agent.jws.tokens import sign_token, verify_token
from agent.net.http import HTTPClient
from agent.tools.publish import DestReport, Publisher

PATTERN = (
    "{build: [{id: 'b', always: true, change: 'echo built >> %(counter)s; echo manifest',"
    " onChange: ['etcha:buildManifest']}],"
    " run: [{id: 'r', always: true, change: 'true'}], runVars: {color: '%(color)s'}}"
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _project(tmp: Path, *, color: str = "blue", dest: list[str] | None = None) -> dict[str, Any]:
    (tmp / "web.jsonnet").write_text(PATTERN % {"counter": tmp / "builds", "color": color})
    return {
        "build": {"signingKey": RIGHT_PRIV},
        "publish": {
            "artifacts": {
                "web": {
                    "pattern": str(tmp / "web.jsonnet"),
                    "dest": dest or [str(tmp / "dist" / "web.jwt")],
                    "expiresIn": "1h",
                    "resignBefore": "10m",
                }
            }
        },
    }


def _check(doc: dict[str, Any], clock: Clock, *, dry_run: bool = False) -> list[DestReport]:
    publisher = Publisher(config_from_dict(doc), client=HTTPClient(), clock=clock)
    return asyncio.run(publisher.check_all(dry_run=dry_run))


def _builds(tmp: Path) -> int:
    path = tmp / "builds"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _claims(path: Path) -> dict[str, Any]:
    token = verify_token(path.read_text(), [parse_verify_key(RIGHT_PUB)], check_times=False)
    return dict(token.claims)


def test_missing_destination_is_built_and_written_0644(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    [report] = _check(doc, Clock(1_000_000))
    dest = tmp_path / "dist" / "web.jwt"
    assert (report.action, report.reason, report.result) == (
        "rebuild",
        "nothing published",
        "published",
    )
    assert stat.S_IMODE(dest.stat().st_mode) == 0o644
    claims = _claims(dest)
    assert claims["exp"] == 1_000_000 + 3600 and claims["iat"] == 1_000_000
    assert claims["etchaBuildManifest"] == "manifest\n" and claims["etchaRunVars"] == {
        "color": "blue"
    }
    assert _builds(tmp_path) == 1


def test_fresh_destination_is_kept(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    _check(doc, Clock(1_000_000))
    before = (tmp_path / "dist" / "web.jwt").read_text()
    [report] = _check(doc, Clock(1_000_000 + 2999))
    assert (report.action, report.result) == ("keep", "fresh")
    assert report.reason == "fresh, expires in 10m1s"
    assert (tmp_path / "dist" / "web.jwt").read_text() == before
    assert _builds(tmp_path) == 1


def test_token_in_the_resign_window_is_resigned_without_building(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    _check(doc, Clock(1_000_000))
    old = _claims(tmp_path / "dist" / "web.jwt")
    [report] = _check(doc, Clock(1_000_000 + 3001))
    assert (report.action, report.result) == ("resign", "published")
    assert report.reason == "expires in 9m59s, within resignBefore 10m"
    new = _claims(tmp_path / "dist" / "web.jwt")
    assert _builds(tmp_path) == 1  # no build command ran
    for name in ("etchaPattern", "etchaBuildManifest", "etchaRunVars", "etchaVersion"):
        assert new[name] == old[name]
    assert new["iat"] == new["nbf"] == 1_000_000 + 3001
    assert new["exp"] == 1_000_000 + 3001 + 3600
    assert new["jti"] and new.get("jti") != old.get("jti")


def test_pattern_edit_rebuilds(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    _check(doc, Clock(1_000_000))
    doc = _project(tmp_path, color="green")
    [report] = _check(doc, Clock(1_000_000 + 10))
    assert (report.action, report.reason) == ("rebuild", "pattern files changed")
    assert _claims(tmp_path / "dist" / "web.jwt")["etchaRunVars"] == {"color": "green"}
    assert _builds(tmp_path) == 2


def test_deleted_destination_is_recreated_from_the_fresh_token_elsewhere(tmp_path: Path) -> None:
    first, second = tmp_path / "a" / "web.jwt", tmp_path / "b" / "web.jwt"
    doc = _project(tmp_path, dest=[str(first), str(second)])
    _check(doc, Clock(1_000_000))
    second.unlink()
    reports = _check(doc, Clock(1_000_000 + 60))
    assert [(r.action, r.result) for r in reports] == [("keep", "fresh"), ("resign", "published")]
    assert reports[1].reason == "nothing published"
    assert second.exists() and _builds(tmp_path) == 1


def test_token_without_exp_or_by_another_key_is_replaced(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    dest = tmp_path / "dist" / "web.jwt"
    _check(doc, Clock(1_000_000))
    claims = _claims(dest)
    del claims["exp"]
    dest.write_text(sign_token(claims, parse_signing_key(RIGHT_PRIV)))
    [report] = _check(doc, Clock(1_000_000 + 5))
    assert (report.action, report.reason) == ("resign", "no exp")
    dest.write_text(sign_token(claims, parse_signing_key(WRONG_PRIV)))
    [report] = _check(doc, Clock(1_000_000 + 6))
    assert report.action == "rebuild"
    assert report.reason == "does not verify with the publishing key: no_match"
    assert _claims(dest)["exp"] == 1_000_000 + 6 + 3600


def test_dry_run_writes_nothing(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    [report] = _check(doc, Clock(1_000_000), dry_run=True)
    assert report.line() == f"web {tmp_path / 'dist' / 'web.jwt'}: rebuild (nothing published)"
    assert not (tmp_path / "dist").exists() and _builds(tmp_path) == 0


def test_file_mode_is_configurable(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    doc["publish"]["fileMode"] = "0640"
    _check(doc, Clock(1_000_000))
    assert stat.S_IMODE((tmp_path / "dist" / "web.jwt").stat().st_mode) == 0o640


@pytest.mark.parametrize(
    ("artifact", "message"),
    [
        ({"resignBefore": "1h"}, "expected resignBefore shorter than expiresIn (1h), got 1h"),
        ({"resignBefore": "2h"}, "expected resignBefore shorter than expiresIn (1h), got 2h"),
        ({"expiresIn": None}, "publish.artifacts.web.expiresIn"),
        ({"dest": ["ftp://x/y"]}, "expected a file path or an http(s) URL, got a ftp:// URL"),
    ],
)
def test_bad_artifact_config_is_refused(artifact: dict[str, Any], message: str) -> None:
    web = {"pattern": "p.jsonnet", "dest": ["a.jwt"], "expiresIn": "1h", **artifact}
    web = {k: v for k, v in web.items() if v is not None}
    with pytest.raises(ConfigError, match=r"publish\.artifacts\.web") as info:
        config_from_dict({"publish": {"artifacts": {"web": web}}})
    assert message in str(info.value)


def test_once_exits_1_when_a_destination_fails_and_dry_run_prints_lines(tmp_path: Path) -> None:
    doc = _project(tmp_path, dest=[str(tmp_path / "ok.jwt"), str(tmp_path / "dir")])
    (tmp_path / "dir").mkdir()
    config = write_json(tmp_path / "c.json", doc)
    dry = run_agent("-c", str(config), "publish", "--dry-run", cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.splitlines() == [
        f"web {tmp_path / 'ok.jwt'}: rebuild (nothing published)",
        f"web {tmp_path / 'dir'}: read (read failed): failed: reading {tmp_path / 'dir'}: "
        "Is a directory",
    ]
    once = run_agent("-c", str(config), "publish", "--once", cwd=tmp_path)
    assert once.returncode == 1
    assert f"web {tmp_path / 'ok.jwt'}: rebuild (nothing published): published" in once.stdout
    doc["publish"]["artifacts"]["web"]["dest"] = [str(tmp_path / "ok.jwt")]
    again = run_agent("-c", str(write_json(tmp_path / "c2.json", doc)), "publish", "--once")
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith(f"web {tmp_path / 'ok.jwt'}: keep (fresh, expires in")


def _link(sub: str, exp: int) -> str:
    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    header = {"alg": "EdDSA", "typ": "etcha-delegation+jwt"}
    claims = {"sub": sub, "etchaDelegation": {}, "iat": 1, "nbf": 1, "exp": exp}
    return f"{b64(header)}.{b64(claims)}.c2ln"


def test_chain_expiring_before_the_token_refuses_to_publish(tmp_path: Path) -> None:
    doc = _project(tmp_path)
    chain = [_link("root", 1_000_000 + 10_000), _link("ci", 1_000_000 + 1800)]
    publisher = Publisher(
        config_from_dict(doc), client=HTTPClient(), chain=chain, clock=Clock(1_000_000)
    )
    [report] = asyncio.run(publisher.check_all())
    assert report.result == "failed"
    assert report.error.startswith(
        "refusing to publish: build.delegationChain[1] (subject key ci) expires in 30m"
    )
    assert not (tmp_path / "dist" / "web.jwt").exists()


def test_chain_close_to_expiry_warns_and_publishes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    doc = _project(tmp_path)
    chain = [_link("root", 1_000_000 + 3600 + 60)]
    publisher = Publisher(
        config_from_dict(doc), client=HTTPClient(), chain=chain, clock=Clock(1_000_000)
    )
    [report] = asyncio.run(publisher.check_all())
    assert report.result == "published"
    assert "build.delegationChain[0] (subject key root) expires in 1h1m" in caplog.text
