"""Handler for `local` (``render`` is in :mod:`agent.cli.render_cmds`, ``build`` in
:mod:`agent.cli.build_cmds`: they run no command, so they do not import the engine)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence

from agent.cli.common import load_config_for
from agent.core.errors import UsageError
from agent.core.paths import is_file, path_text
from agent.pattern.load import load_from_disk, load_from_text
from agent.run.engine import Mode, Result, RunOutcome, run_commands
from agent.run.lazyloop import NEED_LOOP, drive
from agent.tools.inprocess import helper_runner
from agent.tools.report import output_block, result_json, result_lines, shown_outputs

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from agent.pattern.load import LoadedPattern


def cmd_local(args: argparse.Namespace) -> int:
    """Run a pattern, or command text wrapped as ``{run: [<text>]}``, on this host."""
    return drive(_local(args))  # asyncio only once a command needs a process


async def _local(args: argparse.Namespace) -> int:
    config = load_config_for(args)
    source: str = args.source
    disable = bool(args.disable_external)
    target: str = args.target
    if target.endswith(".jsonnet") and not is_file(target):
        raise UsageError(f"local: pattern file {target} does not exist")

    def load(run_vars: Mapping[str, Any] | None = None) -> LoadedPattern:
        if target.endswith(".jsonnet"):
            return load_from_disk(
                path_text(target),
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
        from agent.tools.build import collect_build  # lazy: keys and tokens, for build commands

        await NEED_LOOP  # build commands run under asyncio
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
    from agent.tools.helpers.diff import DIFF_ENV, DIFF_REDACT_ENV  # lazy: helpers, for --diff

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
