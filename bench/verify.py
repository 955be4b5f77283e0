"""Benchmark: token verification throughput and `agent version` start-up time.

Run with ``.venv/bin/python bench/verify.py``. Prints two lines, each ending in PASS or FAIL:

- ``verify``: tokens/s of :func:`agent.jws.tokens.verify_token` on a ~20 KB EdDSA pattern token,
  against raw PyNaCl verification of the same signing input in the same run (target ratio
  >= 0.50).
- ``startup``: median wall time of ``python -m agent version`` against ``python -c pass``
  (target <= 4x).

Exit code 0 when both pass, 1 otherwise.
"""

from __future__ import annotations

import base64
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import nacl.signing

from agent.jws.keys import generate_keys, parse_signing_key, parse_verify_key
from agent.jws.tokens import etcha_claims, sign_token, verify_token

VERIFY_TARGET = 0.50
STARTUP_TARGET = 4.0


def _pattern_token() -> tuple[str, str]:
    private, public = generate_keys("ed25519", "bench")
    body = "{\n  run: [{id: 'x%s', change: 'echo <%s> & done'}],\n}\n"
    files = {f"/lib/file{i}.libsonnet": body.replace("%s", str(i)) * 4 for i in range(46)}
    files["/main.jsonnet"] = "local lib = import 'lib/file0.libsonnet';\n{run: lib.run}\n"
    claims = etcha_claims(
        pattern_entrypoint="/main.jsonnet",
        pattern_files=files,
        build_manifest="abc\n",
        run_vars={"hello": "world", "n": 1},
        version="0.1.0",
        now=time.time(),
        expires_in=3600,
    )
    return sign_token(claims, parse_signing_key(private)), public


def _rate(fn: Callable[[], object], seconds: float = 1.0) -> float:
    fn()
    count = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(50):
            fn()
        count += 50
        now = time.perf_counter()
        if now >= deadline:
            return count / (now - start)


def _b64_impl() -> str:
    from agent.jws import compact

    return "binascii" if compact._fast_b64decode is None else "pybase64"


def bench_verify() -> bool:
    token, public = _pattern_token()
    key = parse_verify_key(public)
    header_payload, _, sig_b64 = token.rpartition(".")
    signing_input = header_payload.encode("ascii")
    signature = base64.urlsafe_b64decode(sig_b64 + "=" * (-len(sig_b64) % 4))
    raw_key = nacl.signing.VerifyKey(base64.b64decode(public.split(":")[1])[12:])

    def agent_verify() -> object:
        return verify_token(token, [key])

    def pynacl_verify() -> object:
        return raw_key.verify(signing_input, signature)

    agent_rates, nacl_rates = [], []
    for _ in range(5):  # interleave to even out CPU frequency drift
        agent_rates.append(_rate(agent_verify))
        nacl_rates.append(_rate(pynacl_verify))
    agent_rate, nacl_rate = max(agent_rates), max(nacl_rates)
    ratio = agent_rate / nacl_rate
    ok = ratio >= VERIFY_TARGET
    print(
        f"verify: agent {agent_rate:.0f}/s, pynacl {nacl_rate:.0f}/s, ratio {ratio:.2f} "
        f"(target >= {VERIFY_TARGET:.2f}) {'PASS' if ok else 'FAIL'}  "
        f"[token {len(token)} bytes, base64 via {_b64_impl()}]"
    )
    return ok


def _median_run(argv: list[str], runs: int = 10) -> float | None:
    times = []
    first = subprocess.run(argv, capture_output=True, text=True)  # also warms the page cache
    if first.returncode != 0:
        last = (first.stderr.strip().splitlines() or ["(no output)"])[-1]
        print(f"startup: {' '.join(argv[1:])} exited {first.returncode}: {last}")
        return None
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def bench_startup() -> bool:
    agent = _median_run([sys.executable, "-m", "agent", "version"])
    bare = _median_run([sys.executable, "-c", "pass"])
    if agent is None or bare is None:
        print("startup: FAIL")
        return False
    ratio = agent / bare
    ok = ratio <= STARTUP_TARGET
    print(
        f"startup: agent version {agent * 1000:.1f} ms, python -c pass {bare * 1000:.1f} ms, "
        f"ratio {ratio:.2f}x (target <= {STARTUP_TARGET:.0f}x) {'PASS' if ok else 'FAIL'}"
    )
    return ok


def main() -> int:
    ok_verify = bench_verify()
    ok_startup = bench_startup()
    return 0 if ok_verify and ok_startup else 1


if __name__ == "__main__":
    raise SystemExit(main())
