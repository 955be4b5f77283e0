"""The publisher's view of a delegation chain (``build.delegationChain``): does it outlive
the token?

:func:`check_chain` is pure: it decodes the links (root first; each a JWT with header
``typ: etcha-delegation+jwt`` and claims ``sub``, ``etchaDelegation``, ``iat``, ``nbf``, ``exp``)
without verifying them (hosts verify chains; the publisher only reads their times) and says:

- a warning for every link that expires within ``2 x resignBefore`` of the token's ``exp`` (the
  next re-signs would outlive it; with ``2 x resignBefore`` longer than ``expiresIn`` this also
  covers every link that expires within ``2 x resignBefore`` of ``now``);
- a refusal when a link expires before the token would (``exp``), naming the link by its index
  in ``build.delegationChain`` and its subject key id (``sub``).

A link without ``exp`` never expires. A link that cannot be decoded is a refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from agent.core.durations import format_duration_short
from agent.core.errors import AgentError
from agent.jws.tokens import decode_token


@dataclass(frozen=True, slots=True)
class ChainCheck:
    """What :func:`check_chain` found: warnings, and the refusal (``""``: publish)."""

    warnings: tuple[str, ...] = ()
    refusal: str = ""


def _link_times(raw: str, index: int) -> tuple[str, float | None]:
    decoded = decode_token(raw)
    sub = decoded.claims.get("sub")
    exp = decoded.claims.get("exp")
    if exp is not None and (isinstance(exp, bool) or not isinstance(exp, int | float)):
        raise AgentError(f"build.delegationChain[{index}]: expected a numeric exp")
    return (sub if isinstance(sub, str) else ""), (None if exp is None else float(exp))


def check_chain(
    chain: Sequence[str], *, token_exp: float | None, resign_before: float, now: float
) -> ChainCheck:
    """Check the chain's links against the token about to be published.

    Args:
        chain: the link JWTs, root first (the order of ``build.delegationChain``).
        token_exp: the ``exp`` of the token to publish (``None``: it never expires).
        resign_before: the artifact's ``resignBefore`` (seconds).
        now: the current time (unix seconds).

    Returns:
        The warnings and the refusal.
    """
    warnings: list[str] = []
    for index, raw in enumerate(chain):
        try:
            sub, exp = _link_times(raw.strip(), index)
        except AgentError as exc:
            return ChainCheck(tuple(warnings), f"build.delegationChain[{index}]: {exc.message}")
        if exp is None:
            continue
        who = f"build.delegationChain[{index}] (subject key {sub or '?'})"
        if token_exp is None or exp < token_exp:
            until = "never expires" if token_exp is None else f"expires in {_left(token_exp, now)}"
            return ChainCheck(
                tuple(warnings),
                f"{who} expires in {_left(exp, now)}, before the token, which {until}: "
                "renew the delegation",
            )
        if exp - token_exp <= 2 * resign_before:
            warnings.append(
                f"{who} expires in {_left(exp, now)}, within 2 x resignBefore of the token's "
                "exp: renew it soon"
            )
    return ChainCheck(tuple(warnings))


def _left(ts: float, now: float) -> str:
    left = ts - now
    return format_duration_short(left) if left >= 0 else f"-{format_duration_short(-left)}"


__all__ = ["ChainCheck", "check_chain"]
