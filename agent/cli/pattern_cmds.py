"""Handlers for `render`, `local` and `build`."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.cli.common import load_config_for, looks_like_token, read_token_arg
from agent.cli.keys_cmds import admit_offline, check_source
from agent.core.errors import UsageError, VerifyError
from agent.core.gojson import dumps_indent
from agent.pattern.load import load_from_disk, load_from_text, load_from_token
from agent.run.engine import Mode, Result, RunOutcome, run_commands
from agent.tools.build import build_to_file, collect_build
from agent.tools.helpers.diff import DIFF_ENV, DIFF_REDACT_ENV
from agent.tools.inprocess import helper_runner
from agent.tools.report import output_block, result_json, result_lines, shown_outputs

if TYPE_CHECKING:
    from agent.pattern.load import LoadedPattern

_PATTERN_SUFFIXES = (".jsonnet", ".libsonnet", ".json")


def cmd_render(args: argparse.Namespace) -> int:
    """Render a JWT (admitted by the trust gate first), a pattern file, or Jsonnet text.

    A token goes through the same gate as ``agent jwt -s`` (context ``offline``); a refused one
    is never rendered, so none of its Jsonnet (or natives) runs.
    """
    config = load_config_for(args)
    target: str = args.target
    source: str = args.source
    disable = bool(args.disable_external)
    path = Path(target)
    token: str | None = None
    if target.startswith(("http://", "https://")):
        token = read_token_arg(target, config=config)
    elif path.is_file() and not target.endswith(_PATTERN_SUFFIXES):
        content = read_token_arg(target, config=config)
        if looks_like_token(content):
            token = content
    elif not path.exists() and looks_like_token(target.strip()):
        token = target.strip()

    if token is not None:
        check_source(config, source)
        try:
            admitted = admit_offline(token, config, source)
        except VerifyError as exc:
            raise VerifyError(
                f"refusing to render a token that did not verify: {exc} (reason {exc.reason})",
                exc.reason,
            ) from exc
        loaded = load_from_token(admitted, config=config, source=source, disable_external=disable)
    elif path.is_file():
        loaded = load_from_disk(path, config=config, source=source, disable_external=disable)
    elif target.endswith((*_PATTERN_SUFFIXES, ".jwt")) or _looks_like_path(target):
        raise UsageError(f"render: file {target} does not exist")
    else:
        loaded = load_from_text(target, config=config, source=source, disable_external=disable)
    print(dumps_indent(loaded.pattern.to_dict()))
    return 0


def _looks_like_path(text: str) -> bool:
    """A bare word such as ``out.jwt`` or ``dir/x`` is a missing file, not Jsonnet text."""
    return bool(text) and not any(c in text for c in "{}[]()'\":+ \n")


def cmd_local(args: argparse.Namespace) -> int:
    """Run a pattern, or command text wrapped as ``{run: [<text>]}``, on this host."""
    return asyncio.run(_local(args))


async def _local(args: argparse.Namespace) -> int:
    config = load_config_for(args)
    source: str = args.source
    disable = bool(args.disable_external)
    target: str = args.target
    if target.endswith(".jsonnet") and not Path(target).is_file():
        raise UsageError(f"local: pattern file {target} does not exist")

    def load(run_vars: Mapping[str, Any] | None = None) -> LoadedPattern:
        if target.endswith(".jsonnet"):
            return load_from_disk(
                Path(target),
                config=config,
                source=source,
                run_vars=run_vars,
                disable_external=disable,
            )
        return load_from_text(
            "{run: [" + target + "]}",
            config=config,
            source=source,
            run_vars=run_vars,
            disable_external=disable,
        )

    loaded = load()
    if loaded.pattern.build:
        _, run_vars = await collect_build(loaded)
        loaded = load(run_vars)
    src = config.sources.get(source)
    check = bool(args.check or (src is not None and src.check_only))
    try:
        pattern_filter = re.compile(args.filter) if args.filter else None
    except re.error as exc:
        raise UsageError(f"local: -f {args.filter!r} is not a valid regexp: {exc}") from exc
    outcome = await run_commands(
        loaded.pattern.run,
        exec=loaded.run_exec,
        mode=Mode.REMOVE if args.remove else Mode.CHANGE,
        check_only=check,
        env=diff_env(config.run.diff_redact) if args.diff else None,
        parent_id=source,
        parent_id_filter=pattern_filter,
        inprocess=helper_runner(config),
        persistent_shell=config.run.persistent_shell,
    )
    json_format = (args.log_format or config.cli.log_format) == "json"
    return _print_outcome(outcome, check=check, args=args, json_format=json_format)


def diff_env(redact: Sequence[str]) -> dict[str, str]:
    """The variables that make the file helpers print diffs (``local --diff``).

    ``ETCHA_DIFF=1`` turns diffs on; ``ETCHA_DIFF_REDACT`` holds the ``run.diffRedact`` globs,
    one a line. (``AGENT_*`` variables are never passed to commands, so these are ``ETCHA_*``.)
    """
    return {DIFF_ENV: "1", DIFF_REDACT_ENV: "\n".join(redact)}


def _print_outcome(
    outcome: RunOutcome, *, check: bool, args: argparse.Namespace, json_format: bool
) -> int:
    """Print the run's outputs and summary; 1 when the run failed."""
    verbose, diff = bool(args.verbose), bool(args.diff)
    result = Result.from_outcome(outcome, check=check)
    shown = shown_outputs(outcome, verbose=verbose, diff=diff, check=check)
    if json_format:
        print(json.dumps(result_json(result, shown if verbose or diff else None), sort_keys=True))
        return 1 if outcome.error is not None else 0
    for step in shown:
        for line in output_block(step.id, step.step, step.output):
            print(line)
    for line in result_lines(result, check=check, failed_output=not verbose):
        if not line.startswith("ERROR: "):
            print(line)
    if outcome.error is not None:
        print(f"ERROR: {outcome.error}", file=sys.stderr)
        return 1
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build and sign a pattern into a JWT file."""
    config = load_config_for(args)
    path = Path(args.pattern)
    if not path.is_file():
        raise UsageError(f"build: pattern file {args.pattern} does not exist")
    dest = Path(args.dest) if args.dest else None
    written = asyncio.run(
        build_to_file(path, dest, config=config, disable_external=bool(args.disable_external))
    )
    print(f"Wrote {written}", file=sys.stderr)
    return 0
