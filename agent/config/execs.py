"""The exec objects a config defines, as :class:`~agent.run.model.Exec` values (SPEC 8).

The config holds them typed already (parsed when it loaded); these helpers only combine them.
"""

from __future__ import annotations

from agent.config.tree import Config
from agent.run.model import Exec


def config_exec(config: Config) -> Exec:
    """The top-level ``exec`` of the config (defaults when unset)."""
    return config.exec


def source_exec(config: Config, source: str) -> Exec:
    """``config.exec ⊕ sources.<source>.exec`` (SPEC 8)."""
    src = config.sources.get(source)
    if src is None or src.exec is None:
        return config.exec
    return config.exec.override(src.exec)


__all__ = ["config_exec", "source_exec"]
