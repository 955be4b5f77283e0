"""The ``jwt_rule`` check of the trust gate: ``run.jwtRule`` then ``sources.X.jwtRule``.

Each configured rule (a CEL expression, compiled by :mod:`agent.config.jwtrule` when the config
loads) is evaluated with ``claims`` and ``header``; only a boolean ``true`` accepts. A rule that
evaluates to anything else, or whose evaluation fails, refuses the token with reason
``jwt_rule``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.config.jwtrule import RuleError, evaluate_rule
from agent.trust.policy import PolicyError

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.jws.tokens import VerifiedToken

__all__ = ["check_jwt_rule"]


def check_jwt_rule(
    token: VerifiedToken, config: Config, source: str, compiled: Callable[[str], object]
) -> None:
    """Evaluate the rules that apply to ``source``.

    Args:
        token: the verified token.
        config: the loaded config.
        source: the source (``""``: only ``run.jwtRule``).
        compiled: the compiled program of a rule text (the gate caches them).

    Raises:
        PolicyError: ``jwt_rule``.
    """
    src = config.sources.get(source) if source else None
    rules = [("run.jwtRule", config.run.jwt_rule)]
    if src is not None:
        rules.append((f"sources.{source}.jwtRule", src.jwt_rule))
    for where, text in rules:
        if not text.strip():
            continue
        try:
            accepted = evaluate_rule(compiled(text), token.claims, token.header)
            problem = "" if accepted else "evaluated to something other than true"
        except RuleError as exc:
            problem = f"could not be evaluated ({exc})"
        if problem:
            raise PolicyError(
                f"source {source or '(none)'}: expected a token {where} accepts, got one it "
                f"refuses: the rule {problem}",
                "jwt_rule",
                key_id=token.key_id,
            )
