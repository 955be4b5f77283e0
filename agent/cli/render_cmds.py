"""Handler for `render`: it runs no command, so it imports neither the engine nor the tools."""

from __future__ import annotations

import argparse
import os

from agent.cli.common import load_config_for, looks_like_token, read_token_arg
from agent.core.errors import UsageError, VerifyError
from agent.core.gojson import dumps_indent
from agent.core.paths import path_text
from agent.pattern.load import load_from_disk, load_from_text, load_from_token

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
    path = path_text(target)  # what Path(target) names (no pathlib at start-up, issue 14)
    token: str | None = None
    if target.startswith(("http://", "https://")):
        token = read_token_arg(target, config=config)
    elif os.path.isfile(path) and not target.endswith(_PATTERN_SUFFIXES):
        content = read_token_arg(target, config=config)
        if looks_like_token(content):
            token = content
    elif not os.path.exists(path) and looks_like_token(target.strip()):
        token = target.strip()

    if token is not None:
        from agent.cli.admit import admit_offline, check_source  # lazy: the gate, for tokens only

        check_source(config, source)
        try:
            admitted = admit_offline(token, config, source)
        except VerifyError as exc:
            raise VerifyError(
                f"refusing to render a token that did not verify: {exc} (reason {exc.reason})",
                exc.reason,
            ) from exc
        loaded = load_from_token(admitted, config=config, source=source, disable_external=disable)
    elif os.path.isfile(path):
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


__all__ = ["cmd_render"]
