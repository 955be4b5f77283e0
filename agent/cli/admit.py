"""Admitting a token offline for the CLI (``jwt``, ``render``, ``compare``): the trust gate in the
``offline`` context, and the ``-s`` source check.

Kept apart from the verbs so that ``render`` imports only the gate, not ``keys_cmds``' helpers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agent.core.errors import ConfigError
from agent.tools.syncrun import finish
from agent.trust.gate import Action, AdmittedToken, Context, TrustGate
from agent.trust.verify import runs_verify_commands

if TYPE_CHECKING:
    from agent.config.schema import Config


def check_source(config: Config, source: str) -> None:
    """Refuse an unknown ``-s`` source (``""`` is none: the global keys, like Etcha).

    Raises:
        ConfigError: naming the configured sources.
    """
    if source and source not in config.sources:
        known = ", ".join(sorted(config.sources)) or "none"
        raise ConfigError(f'unknown source "{source}" (configured sources: {known})')


def with_kept_revocations(gate: TrustGate) -> TrustGate:
    """``gate`` with the revocation lists a daemon with the same config keeps in ``stateDir``
    (verified again; nothing is pulled). Without ``run.revocationPaths`` nothing is read."""
    if gate.config.run.revocation_paths:
        from agent.daemon.revocations import kept_revocations  # lazy: only with revocationPaths

        kept_revocations(gate.config, gate)
    return gate


def admit_offline(
    token: str, config: Config, source: str = "", action: Action | None = None
) -> AdmittedToken:
    """Admit ``token`` through the trust gate in the ``offline`` context for ``source``.

    Everything that needs no daemon state applies (signature or verifyCommands, key windows,
    allowedKeys, exp/nbf, maxTokenAge, chains, scopes for ``action``, revocations including the
    lists kept in ``stateDir``, jwtRule), so ``jwt -s web``, ``render -s web`` and ``compare -s
    web`` refuse what the daemon's ``web`` source would refuse on delivery.

    Raises:
        VerifyError: the token did not verify, or the policy refused it.
    """
    gate = with_kept_revocations(TrustGate(config))
    # The gate's admit is a coroutine because verifyCommands spawn processes; without them it
    # waits on nothing and runs to its end without an event loop (no asyncio import).
    admission = gate.admit(token, source, Context.OFFLINE, action=action)
    return finish(admission, needs_loop=runs_verify_commands(config, source))


__all__ = ["admit_offline", "check_source", "with_kept_revocations"]
