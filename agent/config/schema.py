"""The typed config tree and its loading order: the public face of :mod:`agent.config`.

Responsibility: turn defaults, one config file, ``AGENT_CONFIG``, ``AGENT_<path>`` environment
variables and ``-x path=value`` overrides into one frozen, fully typed :class:`Config`. This
module only gathers the public names; the work is done by, bottom to top:

- :mod:`agent.config.fields`: the schema tables (every key, kind, default and doc line);
- :mod:`agent.config.values`: typing one value (commands and exec objects into the run model);
- :mod:`agent.config.masking`: which values ``show-config`` masks;
- :mod:`agent.config.tree`: the frozen dataclasses and their JSON form;
- :mod:`agent.config.layers`: one layer checked on its own, aliases, old names, merging;
- :mod:`agent.config.load`: finding and reading files, environment and ``-x`` layers, building;
- :mod:`agent.config.reference`: the generated ``docs/configuration.md``.

Invariants:

- Every layer is checked on its own before it is merged, so an unknown key or a wrong type is
  reported with the layer that holds it (``in /etc/agent.jsonnet``, ``in override -x run_x``).
- Commands and exec objects are parsed into :class:`~agent.run.model.Command` and
  :class:`~agent.run.model.Exec` when the config loads; an unknown key anywhere, down to
  ``sources.web.commands[0].exec.nope``, is a config error naming its full path.
- Durations are stored as float seconds; :meth:`Config.to_dict` writes them back as strings.
- Error and log messages name keys, never values, so secrets never reach them.
- Importing this module is cheap: YAML and Jsonnet are imported when first needed.

``python -m agent.config.schema [DIR|FILE]`` writes the reference (as ``agent.cli.docgen``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from agent.config.load import (
    CONFIG_FILE_NAMES,
    ENV_PREFIX,
    config_from_dict,
    find_config_file,
    load_config,
    parse_override_value,
    read_config_file,
)
from agent.config.tree import (
    BuildConfig,
    CLIConfig,
    Config,
    HTTPClientConfig,
    LintConfig,
    RunConfig,
    SourceConfig,
    TargetConfig,
)
from agent.config.values import VerifyKeyEntry, format_go_duration, parse_fingerprint

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = [
    "CONFIG_FILE_NAMES",
    "ENV_PREFIX",
    "BuildConfig",
    "CLIConfig",
    "Config",
    "HTTPClientConfig",
    "LintConfig",
    "RunConfig",
    "SourceConfig",
    "TargetConfig",
    "VerifyKeyEntry",
    "config_from_dict",
    "find_config_file",
    "format_go_duration",
    "load_config",
    "parse_fingerprint",
    "parse_override_value",
    "read_config_file",
]


def __getattr__(name: str) -> Any:
    """``MASK`` and ``render_reference``, imported when first asked for: the reference and the
    masking rules are for ``show-config`` and the docs, not for every command's start-up."""
    if name == "MASK":
        from agent.config.masking import MASK  # lazy: masking rules, for show-config only

        return MASK
    if name == "render_reference":
        from agent.config.reference import render_reference  # lazy: the docs generator

        return render_reference
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _main(argv: Sequence[str]) -> int:
    from pathlib import Path  # lazy: only the docs generator (start-up, issue 14)

    from agent.config.reference import render_reference  # lazy: the docs generator

    target = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs"
    if target.is_dir():
        target = target / "configuration.md"
    target.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
