"""`agent push`: target selection, URLs, the ad-hoc pattern, build-once, signing, output, TLS.

Targets are real aiohttp servers on 127.0.0.1 that record what they receive and answer a canned
status and body; tokens are decoded to check what was signed.
"""

from __future__ import annotations

import asyncio
import io
import json
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from support import RIGHT_PRIV, free_port

from agent.config.schema import Config, config_from_dict
from agent.core.errors import UsageError
from agent.jsonnet.engine import evaluate_text
from agent.jws.tokens import decode_token
from agent.net.tlsutil import server_ssl_context
from agent.tools.push import (
    PushOutcome,
    PushTarget,
    ad_hoc_pattern_text,
    ad_hoc_target,
    format_outcome,
    outcome_from_response,
    push,
    select_targets,
)

# ---------------------------------------------------------------------------- output


def test_changed_and_removed_lines_follow_the_target_header() -> None:
    out = PushOutcome("web1", has_result=True, changed_ids=("a", "b"), removed_ids=("c",))
    text = format_outcome(out, check=False, command_mode=False, color=False)
    assert text == "web1:\n    Changed 2: a, b\n    Removed 1: c"


def test_no_changes_when_both_lists_are_empty() -> None:
    out = PushOutcome("web1", has_result=True)
    assert format_outcome(out, check=False, command_mode=False, color=False) == (
        "web1:\n    No changes"
    )


def test_failed_run_prints_error_then_what_it_changed() -> None:
    out = PushOutcome("w", error="boom", has_result=True, changed_ids=("a",), removed_ids=("r",))
    assert format_outcome(out, check=False, command_mode=False, color=False) == (
        "w:\n    ERROR: boom\n    Changed 1: a\n    Removed 1: r"
    )
    colored = format_outcome(out, check=False, command_mode=False, color=True)
    assert "\033[31mERROR: boom\033[0m" in colored


def test_check_mode_prints_would_change_and_would_remove() -> None:
    out = PushOutcome("w", has_result=True, changed_ids=("a", "b"), removed_ids=("c",))
    assert format_outcome(out, check=True, command_mode=False, color=False) == (
        "w:\n    Would change 2: a, b\n    Would remove 1: c"
    )


def test_command_mode_prints_change_outputs_indented() -> None:
    out = PushOutcome(
        "w", has_result=True, changed_ids=("etcha push",), changed_outputs=("line1\nline2",)
    )
    assert format_outcome(out, check=False, command_mode=True, color=False) == (
        "w:\n    line1\n    line2"
    )


def test_transport_errors_print_only_the_error() -> None:
    out = PushOutcome("w", error="error performing request: refused")
    assert format_outcome(out, check=False, command_mode=False, color=False) == (
        "w:\n    ERROR: error performing request: refused"
    )


def test_response_statuses_are_interpreted_like_etcha() -> None:
    assert outcome_from_response("t", 404, b"").error == "push didn't match any sources"
    assert outcome_from_response("t", 429, b"").error == "push destination is rate limiting"
    assert outcome_from_response("t", 502, b"").error.startswith("error decoding response")
    body = {"changedIDs": ["a"], "err": "failed", "removedIDs": None}
    failed = outcome_from_response("t", 500, json.dumps(body).encode())
    assert failed.error == "failed" and failed.changed_ids == ("a",) and failed.has_result
    assert outcome_from_response("t", 200, b"null") == PushOutcome("t", has_result=True)


# ---------------------------------------------------------------------------- targets


def _config(targets: Mapping[str, Any], **build: Any) -> Config:
    return config_from_dict(
        {"build": {"signingKey": RIGHT_PRIV, **build}, "targets": dict(targets)}
    )


def test_targets_need_the_source_in_source_patterns_and_match_the_filter() -> None:
    cfg = _config(
        {
            "web2": {"sourcePatterns": {"core": ""}, "insecure": True, "port": "5000"},
            "web1": {"sourcePatterns": {"core": "other.jsonnet"}, "hostname": "10.0.0.1"},
            "db": {"sourcePatterns": {"data": ""}},
        }
    )
    names = [t.name for t in select_targets(cfg, "core")]
    assert names == ["web1", "web2"]
    web1, web2 = select_targets(cfg, "core")
    assert web1.url("core") == "https://10.0.0.1:4000/etcha/v1/push/core"
    assert web1.pattern == "other.jsonnet"
    assert web2.url("core") == "http://web2:5000/etcha/v1/push/core"
    assert [t.name for t in select_targets(cfg, "core", target_filter="2$")] == ["web2"]
    assert select_targets(cfg, "nosuch") == []
    with pytest.raises(UsageError, match="-n"):
        select_targets(cfg, "core", target_filter="(")


def test_url_carries_check_and_filter_as_query_parameters() -> None:
    t = PushTarget("h", "https", "::1", "4000", "/etcha/v1/push")
    assert t.url("core", check=True, parent_filter="^core > a") == (
        "https://[::1]:4000/etcha/v1/push/core?check=true&filter=%5Ecore+%3E+a"
    )


def test_ad_hoc_host_is_https_unless_written_with_http() -> None:
    assert ad_hoc_target("host1", port=None, path=None).url("s") == (
        "https://host1:4000/etcha/v1/push/s"
    )
    t = ad_hoc_target("http://127.0.0.1:8080", port=None, path="/x/")
    assert t.url("s") == "http://127.0.0.1:8080/x/s"
    assert ad_hoc_target("http://127.0.0.1", port="9", path=None).url("s") == (
        "http://127.0.0.1:9/etcha/v1/push/s"
    )


def test_ad_hoc_command_is_embedded_as_a_string_not_as_jsonnet() -> None:
    nasty = "echo \"x\"}, {id: 'injected', change: 'rm -rf /'} + {a: std.native(\"x\")}\n\\"
    rendered = evaluate_text(ad_hoc_pattern_text(nasty), "/main.jsonnet")
    assert rendered == {"run": [{"always": True, "change": nasty, "id": "etcha push"}]}


# ---------------------------------------------------------------------------- real pushes


@asynccontextmanager
async def recording_target(
    status: int, body: Any, seen: list[dict[str, Any]], *, tls: bool = False
) -> AsyncIterator[int]:
    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(
            {
                "path": request.path,
                "query": dict(request.query),
                "token": (await request.read()).decode(),
            }
        )
        if body is None:
            return web.Response(status=status)
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_post("/etcha/v1/push/{source}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    ctx: ssl.SSLContext | None = server_ssl_context() if tls else None
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield port
    finally:
        await runner.cleanup()


OK = {"changedIDs": ["a", "b"], "changedOutputs": ["", ""], "err": "", "exit": False}


def test_build_runs_once_per_push_and_target_vars_are_signed(tmp_path: Path) -> None:
    build_log = tmp_path / "build.log"
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text(
        "{build: [{id: 'b', always: true, change: 'echo built >> "
        + str(build_log)
        + "; echo manifest-line', onChange: ['etcha:buildManifest']}],"
        " runVars: {base: 1, over: 'pattern'},"
        " run: [{id: 'a', always: true, change: 'true'}]}"
    )
    seen: dict[str, list[dict[str, Any]]] = {"t1": [], "t2": [], "t3": []}

    async def go() -> tuple[int, str]:
        async with AsyncExitStack() as stack:
            ports = {
                name: await stack.enter_async_context(recording_target(200, OK, seen[name]))
                for name in seen
            }
            targets = {
                name: {
                    "hostname": "127.0.0.1",
                    "insecure": True,
                    "port": str(port),
                    "sourcePatterns": {"core": ""},
                    "vars": {"over": name},
                }
                for name, port in ports.items()
            }
            cfg = _config(targets, pushMaxWorkers=2)
            out = io.StringIO()
            code = await push(cfg, "core", str(pattern), out=out, cwd=tmp_path)
            return code, out.getvalue()

    code, text = asyncio.run(go())
    assert code == 0
    assert build_log.read_text().splitlines() == ["built"]
    # Each target prints when it finishes (in any order), then the recap.
    lines = text.splitlines()
    blocks = sorted("\n".join(lines[i : i + 2]) for i in range(0, len(lines) - 1, 2))
    assert blocks == [f"{name}:\n    Changed 2: a, b" for name in ("t1", "t2", "t3")]
    assert lines[-1] == "3 targets: 3 changed, 0 unchanged, 0 failed, 0 unreachable"
    for name, records in seen.items():
        assert len(records) == 1
        assert records[0]["path"] == "/etcha/v1/push/core"
        assert records[0]["query"] == {}
        claims = decode_token(records[0]["token"]).claims
        assert claims["etchaRunVars"] == {"base": 1, "over": name}
        assert claims["etchaBuildManifest"] == "manifest-line\n"


def test_check_filter_failures_and_exit_code(tmp_path: Path) -> None:
    seen_ok: list[dict[str, Any]] = []
    seen_404: list[dict[str, Any]] = []

    async def go() -> tuple[int, str]:
        async with (
            recording_target(200, {"changedIDs": ["x"], "removedIDs": ["y"]}, seen_ok) as ok,
            recording_target(404, None, seen_404) as missing,
        ):
            dead = free_port()
            targets = {
                name: {
                    "hostname": "127.0.0.1",
                    "insecure": True,
                    "port": str(port),
                    "sourcePatterns": {"core": ""},
                }
                for name, port in (("a-ok", ok), ("b-404", missing), ("c-dead", dead))
            }
            out = io.StringIO()
            code = await push(
                _config(targets), "core", "echo hi", check=True, parent_filter="^core", out=out
            )
            return code, out.getvalue()

    code, text = asyncio.run(go())
    assert code == 1
    blocks = text.split("\n")[:-2]  # the last line is the recap
    heads = [i for i, line in enumerate(blocks) if not line.startswith(" ")]
    ends = [*heads[1:], len(blocks)]
    by_name = {blocks[i]: blocks[i + 1 : j] for i, j in zip(heads, ends, strict=True)}
    assert by_name["a-ok:"] == ["    Would change 1: x", "    Would remove 1: y"]
    assert by_name["b-404:"] == ["    ERROR: push didn't match any sources"]
    assert by_name["c-dead:"][0].startswith("    UNREACHABLE: error performing request:")
    assert text.splitlines()[-1] == "3 targets: 1 changed, 0 unchanged, 1 failed, 1 unreachable"
    assert seen_ok[0]["query"] == {"check": "true", "filter": "^core"}
    claims = decode_token(seen_ok[0]["token"]).claims
    assert claims["etchaPattern"]["files"]["/main.jsonnet"].count("echo hi") == 1


def test_command_mode_prints_the_change_outputs(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []
    body = {"changedIDs": ["etcha push"], "changedOutputs": ["hello\nworld"]}

    async def go() -> tuple[int, str]:
        async with recording_target(200, body, seen) as port:
            out = io.StringIO()
            code = await push(
                _config({}), "core", "echo hello", host="http://127.0.0.1", port=str(port), out=out
            )
            return code, out.getvalue()

    code, text = asyncio.run(go())
    assert code == 0
    assert text == (
        "http://127.0.0.1:\n    hello\n    world\n"
        "1 target: 1 changed, 0 unchanged, 0 failed, 0 unreachable\n"
    )


def test_tls_is_verified_by_default_and_skip_verify_turns_it_off(tmp_path: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def go() -> tuple[tuple[int, str], tuple[int, str]]:
        async with recording_target(200, OK, seen, tls=True) as port:
            strict_out, lax_out = io.StringIO(), io.StringIO()
            strict = await push(
                _config({}), "core", "true", host="127.0.0.1", port=str(port), out=strict_out
            )
            lax = await push(
                _config({}, tlsSkipVerify=True),
                "core",
                "true",
                host="127.0.0.1",
                port=str(port),
                out=lax_out,
            )
            return (strict, strict_out.getvalue()), (lax, lax_out.getvalue())

    (strict, strict_text), (lax, _) = asyncio.run(go())
    assert strict == 1
    assert "ERROR: error performing request" in strict_text
    assert "certificate" in strict_text.lower()
    assert lax == 0
    assert len(seen) == 1


def test_no_matching_target_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="target"):
        asyncio.run(push(_config({}), "core", "true", out=io.StringIO()))


def test_progress_line_only_with_several_targets(tmp_path: Path) -> None:
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text("{run: [{id: 'a', always: true, change: 'true'}]}")

    async def go(names: tuple[str, ...]) -> str:
        seen: list[dict[str, Any]] = []
        async with AsyncExitStack() as stack:
            targets = {}
            for name in names:
                port = await stack.enter_async_context(recording_target(200, OK, seen))
                targets[name] = {
                    "hostname": "127.0.0.1",
                    "insecure": True,
                    "port": str(port),
                    "sourcePatterns": {"core": ""},
                }
            progress = io.StringIO()
            code = await push(
                _config(targets),
                "core",
                str(pattern),
                out=io.StringIO(),
                progress=progress,
                cwd=tmp_path,
            )
            assert code == 0
            return progress.getvalue()

    several = asyncio.run(go(("t1", "t2")))
    assert "Pushing to 2 targets: 2/2 done" in several
    assert several.endswith("\r\033[K")  # the line is cleared before the results print
    assert asyncio.run(go(("t1",))) == ""


@pytest.mark.parametrize("trust", ["caFile", "tlsSkipVerify"])
def test_http_client_settings_trust_a_self_signed_target(tmp_path: Path, trust: str) -> None:
    from agent.net.tlsutil import self_signed

    cert, key = self_signed(["localhost"], ["127.0.0.1"])
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    client = (
        {"caFile": str(tmp_path / "cert.pem")} if trust == "caFile" else {"tlsSkipVerify": True}
    )
    seen: list[str] = []

    async def go() -> tuple[int, str]:
        async def handler(request: web.Request) -> web.StreamResponse:
            seen.append(request.path)
            return web.json_response(OK)

        app = web.Application()
        app.router.add_post("/etcha/v1/push/{source}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
        try:
            cfg = config_from_dict({"build": {"signingKey": RIGHT_PRIV}, "httpClient": client})
            out = io.StringIO()
            code = await push(cfg, "core", "true", host="127.0.0.1", port=str(port), out=out)
            return code, out.getvalue()
        finally:
            await runner.cleanup()

    code, text = asyncio.run(go())
    assert code == 0, text
    assert seen == ["/etcha/v1/push/core"]


def test_push_max_workers_bounds_concurrent_targets(tmp_path: Path) -> None:
    pattern = tmp_path / "p.jsonnet"
    pattern.write_text("{run: [{id: 'a', always: true, change: 'true'}]}")
    state = {"now": 0, "peak": 0}

    async def go() -> int:
        async def handler(request: web.Request) -> web.StreamResponse:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
            await asyncio.sleep(0.2)
            state["now"] -= 1
            return web.json_response(OK)

        app = web.Application()
        app.router.add_post("/etcha/v1/push/{source}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        port = free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            targets = {
                f"t{i}": {
                    "hostname": "127.0.0.1",
                    "insecure": True,
                    "port": str(port),
                    "sourcePatterns": {"core": ""},
                }
                for i in range(5)
            }
            cfg = _config(targets, pushMaxWorkers=2)
            return await push(cfg, "core", str(pattern), out=io.StringIO(), cwd=tmp_path)
        finally:
            await runner.cleanup()

    assert asyncio.run(go()) == 0
    assert state["peak"] == 2  # five targets, never more than two at once


# ------------------------------------------------------------------ certificate pinning


def test_fingerprint_flag_is_canonical_and_pins_every_selected_target() -> None:
    pinned = "sha256:" + "cd" * 32
    own = "sha256:" + "ef" * 32
    cfg = _config(
        {
            "a": {"sourcePatterns": {"core": ""}, "fingerprint": own},
            "b": {"sourcePatterns": {"core": ""}},
        }
    )
    assert [t.fingerprint for t in select_targets(cfg, "core")] == [own, ""]
    flagged = select_targets(cfg, "core", fingerprint="SHA256:" + ":".join(["CD"] * 32))
    assert [t.fingerprint for t in flagged] == [pinned, pinned]
    (ad_hoc,) = select_targets(cfg, "core", host="h1", fingerprint=pinned)
    assert ad_hoc.fingerprint == pinned
    with pytest.raises(UsageError, match="--fingerprint: expected sha256:<64 hex digits>"):
        select_targets(cfg, "core", host="h1", fingerprint="cd" * 32)
    with pytest.raises(UsageError, match="expected an https target to pin"):
        select_targets(cfg, "core", host="http://h1", fingerprint=pinned)


@asynccontextmanager
async def self_signed_target(seen: list[str], tmp_path: Path) -> AsyncIterator[tuple[int, str]]:
    """A TLS push target with a fresh self-signed certificate: yields (port, its fingerprint)."""
    from agent.net.tlsutil import fingerprint_pem, self_signed

    cert, key = self_signed()
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def handler(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        return web.json_response(OK)

    app = web.Application()
    app.router.add_post("/etcha/v1/push/{source}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=ctx).start()
    try:
        yield port, fingerprint_pem(cert, what="test")
    finally:
        await runner.cleanup()


def test_pinned_fingerprint_push_needs_no_ca_and_no_skip_verify(tmp_path: Path) -> None:
    seen: list[str] = []

    async def go() -> tuple[int, int, str]:
        async with self_signed_target(seen, tmp_path) as (port, fp):
            flag = await push(
                _config({}),
                "core",
                "true",
                host="127.0.0.1",
                port=str(port),
                fingerprint=fp,
                out=io.StringIO(),
            )
            target = {
                "t": {
                    "hostname": "127.0.0.1",
                    "port": port,
                    "fingerprint": fp,
                    "sourcePatterns": {"core": ""},
                }
            }
            out = io.StringIO()
            configured = await push(_config(target), "core", "true", out=out)
            return flag, configured, out.getvalue()

    flag, configured, text = asyncio.run(go())
    assert (flag, configured) == (0, 0), text
    assert seen == ["/etcha/v1/push/core", "/etcha/v1/push/core"]


def test_wrong_fingerprint_is_refused_naming_expected_and_got(tmp_path: Path) -> None:
    seen: list[str] = []
    wrong = "sha256:" + "0" * 64

    async def go() -> tuple[int, str, str]:
        async with self_signed_target(seen, tmp_path) as (port, fp):
            out = io.StringIO()
            code = await push(
                _config({}, tlsSkipVerify=True),  # a pin is checked even when skipping is set
                "core",
                "true",
                host="127.0.0.1",
                port=str(port),
                fingerprint=wrong,
                out=out,
            )
            return code, out.getvalue(), fp

    code, text, actual = asyncio.run(go())
    assert code == 1
    assert seen == []
    assert "certificate fingerprint mismatch for 127.0.0.1:" in text
    assert f"expected {wrong}, got {actual}" in text


def test_tls_verification_failure_names_the_three_fixes(tmp_path: Path) -> None:
    seen: list[str] = []

    async def go() -> tuple[int, str]:
        async with self_signed_target(seen, tmp_path) as (port, _):
            out = io.StringIO()
            code = await push(
                _config({}), "core", "true", host="127.0.0.1", port=str(port), out=out
            )
            return code, out.getvalue()

    code, text = asyncio.run(go())
    assert code == 1 and seen == []
    assert "TLS verification of 127.0.0.1:" in text
    assert "self-signed certificate" in text
    for fix in ("httpClient.caFile", "fingerprint", "httpClient.tlsSkipVerify"):
        assert fix in text, fix
    lines = text.splitlines()  # the target header, one error line and the recap
    assert len(lines) == 3
    assert lines[2] == "1 target: 0 changed, 0 unchanged, 1 failed, 0 unreachable"


# ------------------------------------------------------------------ Etcha's build.pushTargets


def test_push_targets_route_a_push_to_the_targets_listing_the_source(tmp_path: Path) -> None:
    seen: dict[str, list[dict[str, Any]]] = {"web": [], "db": []}

    async def go() -> tuple[int, str]:
        async with (
            recording_target(200, OK, seen["web"]) as web_port,
            recording_target(200, OK, seen["db"]) as db_port,
        ):
            cfg = config_from_dict(
                {
                    "build": {
                        "signingKey": RIGHT_PRIV,
                        "pushTargets": {
                            "web": {
                                "hostname": "127.0.0.1",
                                "insecure": True,
                                "port": web_port,
                                "sources": ["core"],
                                "vars": {"role": "web"},
                            },
                            "db": {
                                "hostname": "127.0.0.1",
                                "insecure": True,
                                "port": db_port,
                                "sources": ["data"],
                            },
                        },
                    }
                }
            )
            out = io.StringIO()
            code = await push(cfg, "core", "true", out=out)
            return code, out.getvalue()

    code, text = asyncio.run(go())
    assert code == 0
    assert text.startswith("web:\n") and "db:" not in text
    assert seen["db"] == []
    assert [r["path"] for r in seen["web"]] == ["/etcha/v1/push/core"]
    assert decode_token(seen["web"][0]["token"]).claims["etchaRunVars"] == {"role": "web"}


def test_push_tls_skip_verify_old_name_turns_verification_off(tmp_path: Path) -> None:
    seen: list[str] = []

    async def go() -> int:
        async with self_signed_target(seen, tmp_path) as (port, _):
            cfg = config_from_dict({"build": {"signingKey": RIGHT_PRIV, "pushTLSSkipVerify": True}})
            return await push(
                cfg, "core", "true", host="127.0.0.1", port=str(port), out=io.StringIO()
            )

    assert asyncio.run(go()) == 0
    assert seen == ["/etcha/v1/push/core"]
