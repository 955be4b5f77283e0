"""The exec objects a config defines, as :class:`~agent.run.model.Exec` values (SPEC 8)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.run.model import DEFAULT_EXEC, Exec

if TYPE_CHECKING:
    from agent.config.schema import Config


def config_exec(config: Config) -> Exec:
    """The top-level ``exec`` of the config as an :class:`Exec` (defaults when unset)."""
    if not config.exec:
        return DEFAULT_EXEC
    return Exec.from_dict(config.exec, where="config exec")


def source_exec(config: Config, source: str) -> Exec:
    """``config.exec ⊕ sources.<source>.exec`` (SPEC 8)."""
    base = config_exec(config)
    src = config.sources.get(source)
    if src is None or not src.exec:
        return base
    return base.override(Exec.from_dict(src.exec, where=f"sources.{source}.exec"))


__all__ = ["config_exec", "source_exec"]
