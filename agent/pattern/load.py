"""Typed Patterns, render vars, and loading a Pattern from disk or from a verified token.

Invariants:

- A Pattern is rendered from an in-memory file set, as Etcha does: from disk we first collect the
  entry file and its imports (:func:`agent.jsonnet.imports.collect_files`), then render that set.
- :func:`load_from_token` accepts only an :class:`~agent.trust.gate.AdmittedToken`, so
  unadmitted input never reaches the renderer; rendering a token is sandboxed to its embedded files.
- Vars merge order (later wins, per top-level key): the defaults ``agentBin`` (this agent's own
  executable, :func:`agent.run.selfexec.agent_command`) and ``root`` (``""``) → runVars →
  config ``vars`` (plus build's
  ``srcDir``/``srcPath``/``dstDir``/``dstPath``) → ``sources.<name>.vars``; then ``source``,
  ``sysinfo`` and ``test`` are forced, and ``jwt`` holds the raw token when rendering from one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from agent.config.execs import source_exec
from agent.core.durations import parse_duration
from agent.core.errors import AgentError, PatternError, json_kind
from agent.core.logs import get_logger
from agent.core.paths import path_text
from agent.core.records import Record
from agent.jsonnet import sysinfo
from agent.jsonnet.imports import collect_files
from agent.jsonnet.natives import NativeContext, make_natives
from agent.jsonnet.sandbox import render_files
from agent.run.model import Command, Exec, commands_to_json, parse_commands
from agent.run.selfexec import agent_command

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.config.schema import Config
    from agent.trust.gate import AdmittedToken

logger = get_logger(__name__)

#: Keys a rendered Pattern may carry. Others are warnings when rendering, errors in lint.
PATTERN_KEYS = frozenset(
    {
        "audience",
        "build",
        "buildExec",
        "buildOutput",
        "expiresIn",
        "expiresInSec",
        "id",
        "issuer",
        "run",
        "runExec",
        "runVars",
        "subject",
    }
)


#: The var naming the scratch directory ``agent test`` and ``agent lint`` give each pattern.
TEST_DIR_VAR = "testDir"
#: The var the standard library's file functions put absolute paths under ('' on hosts).
ROOT_VAR = "root"
#: The var naming the agent executable the standard library's helpers run.
AGENT_BIN_VAR = "agentBin"


def unknown_key_message(key: str) -> str:
    """``unknown key "runn" (did you mean "run"?)``, the suggestion only when one is close."""
    import difflib
    import json

    close = difflib.get_close_matches(key, sorted(PATTERN_KEYS), n=1)
    hint = f" (did you mean {json.dumps(close[0])}?)" if close else ""
    return f"unknown key {json.dumps(key)}{hint}"


@dataclass(frozen=True, repr=False, eq=False)
class Pattern(Record):
    """A rendered Pattern.

    Args:
        audience: ``aud`` claim entries.
        build: commands run by ``agent build`` before signing.
        build_exec: exec override for build commands.
        build_output: default destination of ``agent build``.
        expires_in: seconds until the token expires (0 = never).
        id: ``jti`` claim.
        issuer: ``iss`` claim.
        run: commands run on hosts.
        run_exec: exec override for run commands.
        run_vars: vars embedded in the token (``etchaRunVars``).
        subject: ``sub`` claim.
    """

    audience: tuple[str, ...] = ()
    build: tuple[Command, ...] = ()
    build_exec: Exec | None = None
    build_output: str = ""
    expires_in: float = 0.0
    id: str = ""
    issuer: str = ""
    run: tuple[Command, ...] = ()
    run_exec: Exec | None = None
    run_vars: Mapping[str, Any] = field(default_factory=dict)
    subject: str = ""

    @classmethod
    def from_dict(
        cls, data: Any, *, where: str, strict: bool = False
    ) -> tuple[Pattern, tuple[str, ...]]:
        """Build a Pattern from rendered JSON.

        Args:
            data: the rendered value; must be an object.
            where: the file or token it came from, for messages.
            strict: unknown keys are errors (lint) instead of warnings.

        Returns:
            The Pattern and the warnings found.

        Raises:
            PatternError: the value is not a valid Pattern.
        """
        if not isinstance(data, Mapping):
            raise PatternError(
                f"{where}: expected the pattern to render to an object, got {json_kind(data)}"
            )
        warnings = _unknown_keys(data, where=where, strict=strict)
        expires_in = _expires_in(data, where, warnings)
        run_vars = data.get("runVars") or {}
        if not isinstance(run_vars, Mapping):
            raise PatternError(f"{where}: runVars: expected an object, got {json_kind(run_vars)}")
        pattern = cls(
            audience=_audience(data.get("audience"), where),
            build=_commands(data, "build", where),
            build_exec=_exec(data, "buildExec", where),
            build_output=_text(data, "buildOutput", where),
            expires_in=expires_in,
            id=_text(data, "id", where),
            issuer=_text(data, "issuer", where),
            run=_commands(data, "run", where),
            run_exec=_exec(data, "runExec", where),
            run_vars=dict(run_vars),
            subject=_text(data, "subject", where),
        )
        return pattern, tuple(warnings)

    def to_dict(self) -> dict[str, Any]:
        """The Pattern as JSON, for ``agent render``."""
        out: dict[str, Any] = {
            "audience": list(self.audience),
            "build": commands_to_json(self.build),
            "buildOutput": self.build_output,
            "expiresInSec": int(self.expires_in),
            "id": self.id,
            "issuer": self.issuer,
            "run": commands_to_json(self.run),
            "runVars": dict(self.run_vars),
            "subject": self.subject,
        }
        if self.build_exec is not None:
            out["buildExec"] = self.build_exec.to_dict()
        if self.run_exec is not None:
            out["runExec"] = self.run_exec.to_dict()
        return out


def _unknown_keys(data: Mapping[str, Any], *, where: str, strict: bool) -> list[str]:
    """Warnings for keys a Pattern does not know; with ``strict`` the first is an error."""
    warnings: list[str] = []
    for key in sorted(k for k in data if k not in PATTERN_KEYS):
        msg = f"{where}: {unknown_key_message(key)}"
        if strict:
            raise PatternError(msg, hint="known keys: " + ", ".join(sorted(PATTERN_KEYS)))
        warnings.append(msg)
    return warnings


def _audience(raw: Any, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,) if raw else ()
    if isinstance(raw, list) and all(isinstance(a, str) for a in raw):
        return tuple(raw)
    raise PatternError(
        f"{where}: audience: expected a string or a list of strings, got {json_kind(raw)}"
    )


def _expires_in(data: Mapping[str, Any], where: str, warnings: list[str]) -> float:
    """``expiresIn`` (a duration) wins over the old ``expiresInSec`` (a number), with a warning."""
    expires_in = 0.0
    if "expiresInSec" in data and data["expiresInSec"] is not None:
        sec = data["expiresInSec"]
        if isinstance(sec, bool) or not isinstance(sec, int | float) or sec < 0:
            raise PatternError(
                f"{where}: expiresInSec: expected a non-negative number, got {sec!r}"
            )
        expires_in = float(sec)
    if "expiresIn" in data and data["expiresIn"] not in (None, ""):
        raw = data["expiresIn"]
        if not isinstance(raw, str):
            raise PatternError(
                f"{where}: expiresIn: expected a duration string such as 1h, got {json_kind(raw)}"
            )
        if "expiresInSec" in data:
            warnings.append(
                f"{where}: both expiresIn and expiresInSec are set; using expiresIn "
                "(expiresInSec is the old form)"
            )
        try:
            expires_in = parse_duration(raw, name=f"{where}: expiresIn")
        except AgentError as exc:
            raise PatternError(str(exc)) from exc
    return expires_in


def _text(data: Mapping[str, Any], key: str, where: str) -> str:
    value = data.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise PatternError(f"{where}: {key}: expected a string, got {json_kind(value)}")
    return value


def _exec(data: Mapping[str, Any], key: str, where: str) -> Exec | None:
    value = data.get(key)
    if value is None:
        return None
    try:
        return Exec.from_dict(value, where=f"{where}: {key}")
    except AgentError as exc:
        raise PatternError(str(exc)) from exc


def _commands(data: Mapping[str, Any], key: str, where: str) -> tuple[Command, ...]:
    value = data.get(key)
    if value is None:
        return ()
    try:
        return parse_commands(value, where=f"{where}: {key}")
    except AgentError as exc:
        raise PatternError(str(exc)) from exc


@dataclass(frozen=True, repr=False, eq=False)
class LoadedPattern(Record):
    """A Pattern with what it was rendered from and its resolved execs."""

    pattern: Pattern
    entrypoint: str
    files: Mapping[str, str]
    exec: Exec
    run_exec: Exec
    build_exec: Exec
    warnings: tuple[str, ...] = ()


def render_vars(
    config: Config,
    source: str,
    run_vars: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
    *,
    jwt: str | None = None,
) -> dict[str, Any]:
    """Assemble ``vars`` for rendering a pattern (see module docstring for the order)."""
    merged: dict[str, Any] = {AGENT_BIN_VAR: agent_command(), ROOT_VAR: ""}
    merged.update(run_vars or {})
    merged.update(config.vars)
    if extra:
        merged.update(extra)
    src = config.sources.get(source)
    if src is not None:
        merged.update(src.vars)
    merged["source"] = source
    merged["sysinfo"] = sysinfo.collect()
    merged["test"] = source == "test"
    if jwt is not None:
        merged["jwt"] = jwt
    return merged


def _render(
    entrypoint: str,
    files: Mapping[str, str],
    *,
    config: Config,
    exec_: Exec,
    vars_: Mapping[str, Any],
    entry_dir: str,
    disable_external: bool,
) -> Any:
    view = {
        "exec": exec_.to_dict(),
        "vars": dict(vars_),
        "targets": config.targets_dict(),
    }
    env = None if exec_.env_inherit is not False else dict(exec_.env or {})
    ctx = NativeContext(
        config_view=view,
        env=env,
        disable_external=disable_external,
        entry_dir=entry_dir,
        http_timeout=10.0,
        tls_skip_verify=config.http_client.tls_skip_verify,
        ca_file=config.http_client.ca_file,
        no_system_ca=config.http_client.no_system_ca,
        follow_cross_origin=config.http_client.follow_cross_origin_redirects,
    )
    return render_files(entrypoint, files, natives=make_natives(ctx))


def _finish(
    data: Any,
    *,
    where: str,
    entrypoint: str,
    files: Mapping[str, str],
    exec_: Exec,
    strict: bool,
) -> LoadedPattern:
    pattern, warnings = Pattern.from_dict(data, where=where, strict=strict)
    for w in warnings:
        logger.warning("%s", w)
    if not pattern.build and not pattern.run:
        raise PatternError(f"{where}: received empty commands: the pattern has no build or run")
    return LoadedPattern(
        pattern=pattern,
        entrypoint=entrypoint,
        files=dict(files),
        exec=exec_,
        run_exec=exec_.override(pattern.run_exec),
        build_exec=exec_.override(pattern.build_exec),
        warnings=warnings,
    )


def load_from_disk(
    path: str | os.PathLike[str],
    *,
    config: Config,
    source: str,
    run_vars: Mapping[str, Any] | None = None,
    extra_vars: Mapping[str, Any] | None = None,
    disable_external: bool = False,
    strict: bool = False,
) -> LoadedPattern:
    """Collect a pattern's files from disk and render them.

    Raises:
        RenderError: the Jsonnet did not render (message names file:line).
        PatternError: the result is not a valid Pattern.
    """
    entrypoint, files = collect_files(path)
    exec_ = source_exec(config, source)
    vars_ = render_vars(config, source, run_vars, extra_vars)
    data = _render(
        entrypoint,
        files,
        config=config,
        exec_=exec_,
        vars_=vars_,
        entry_dir=os.path.dirname(os.path.realpath(path)),  # Path.resolve().parent
        disable_external=disable_external,
    )
    return _finish(
        data, where=path_text(path), entrypoint=entrypoint, files=files, exec_=exec_, strict=strict
    )


def load_from_text(
    text: str,
    *,
    config: Config,
    source: str,
    run_vars: Mapping[str, Any] | None = None,
    disable_external: bool = False,
) -> LoadedPattern:
    """Render Jsonnet text given on the command line as ``/main.jsonnet``."""
    exec_ = source_exec(config, source)
    files = {"/main.jsonnet": text}
    vars_ = render_vars(config, source, run_vars)
    data = _render(
        "/main.jsonnet",
        files,
        config=config,
        exec_=exec_,
        vars_=vars_,
        entry_dir=os.getcwd(),
        disable_external=disable_external,
    )
    return _finish(
        data, where="<text>", entrypoint="/main.jsonnet", files=files, exec_=exec_, strict=False
    )


def load_from_token(
    admitted: AdmittedToken,
    *,
    config: Config,
    source: str,
    disable_external: bool = False,
) -> LoadedPattern:
    """Render the pattern embedded in a token the trust gate admitted, sandboxed to its files.

    Raises:
        PatternError: the token carries no pattern, or it is not a valid Pattern.
        RenderError: the embedded Jsonnet did not render.
    """
    data = render_token(admitted, config=config, source=source, disable_external=disable_external)
    return finish_token(data, admitted, config=config, source=source)


def render_token(
    admitted: AdmittedToken,
    *,
    config: Config,
    source: str,
    disable_external: bool = False,
) -> Any:
    """The first half of :func:`load_from_token`: the rendered JSON value, no Pattern built yet.

    The daemon calls it in a short-lived child process (:mod:`agent.daemon.render_child`) and
    passes the value to :func:`finish_token` itself, so the Jsonnet engine never loads there.

    Raises:
        PatternError: the token carries no pattern.
        RenderError: the embedded Jsonnet did not render.
    """
    from agent.trust.gate import AdmittedToken  # lazy: loaded already once a token is admitted

    if not isinstance(admitted, AdmittedToken):  # the type is the guarantee; refuse anything else
        raise TypeError("load_from_token needs an AdmittedToken (agent.trust.gate)")
    token = admitted.verified
    files = token.pattern_files
    if not files:
        raise PatternError("token: received empty commands: the token has no etchaPattern files")
    return _render(
        token.pattern_entrypoint,
        files,
        config=config,
        exec_=source_exec(config, source),
        vars_=render_vars(config, source, token.run_vars, jwt=token.raw),
        entry_dir="",
        disable_external=disable_external,
    )


def finish_token(
    data: Any, admitted: AdmittedToken, *, config: Config, source: str
) -> LoadedPattern:
    """The second half of :func:`load_from_token`: the Pattern built from the rendered value.

    Raises:
        PatternError: the value is not a valid Pattern.
    """
    token = admitted.verified
    return _finish(
        data,
        where=f"token {token.pattern_entrypoint}",
        entrypoint=token.pattern_entrypoint,
        files=token.pattern_files or {},
        exec_=source_exec(config, source),
        strict=False,
    )
