"""The revocation-list puller (:class:`agent.daemon.revocations.RevocationPuller`) on real files.

A list is applied (the gate updated, the audit hook told) once per new list: pulling the same
file again is not a new list, and an older list never replaces a newer one.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from agent.config.schema import config_from_dict
from agent.daemon.revocations import RevocationPuller
from agent.jws.keys import generate_keys, parse_signing_key
from agent.jws.tokens import TYP_REVOCATIONS, sign_token
from agent.trust.gate import TrustGate
from agent.trust.revocation import RevocationList, Revoked, revocation_claims


def _list(private: str, key: str, iat: float) -> str:
    claims = revocation_claims([Revoked(key, iat)], now=iat)
    return sign_token(claims, parse_signing_key(private), typ=TYP_REVOCATIONS)


def test_an_unchanged_list_is_applied_once_and_an_older_one_never(tmp_path: Path) -> None:
    private, public = generate_keys("ed25519", "root")
    path = tmp_path / "revocations.jwt"
    now = time.time()
    path.write_text(_list(private, "ci", now - 10))
    config = config_from_dict(
        {"run": {"trustRoots": [public], "revocationPaths": [str(path)], "stateDir": str(tmp_path)}}
    )
    gate = TrustGate(config)
    applied: list[tuple[str, int]] = []

    def seen(where: str, parsed: RevocationList) -> None:
        applied.append((parsed.entries[0].key, parsed.iat))

    puller = RevocationPuller(lambda: config, gate, tmp_path / "state", on_applied=seen)

    async def go() -> None:
        await puller.pull_all()
        await puller.pull_all()  # the same file again: not a new list
        path.write_text(_list(private, "team", now))
        await puller.pull_all()
        path.write_text(_list(private, "old", now - 100))  # older than the one held
        await puller.pull_all()

    asyncio.run(go())
    assert applied == [("ci", int(now - 10)), ("team", int(now))]
    assert [r.key for r in gate.revocations().entries] == ["team"]
