"""The trust gate: the one place a token is admitted for a source.

:meth:`TrustGate.admit` takes a raw JWT, the source it is for and the :class:`Context` it arrived
in (a push, a pull, the start-up restore, a later run of a stored token, or the CLI) and returns an
:class:`AdmittedToken`, the only type the renderer (:func:`agent.pattern.load.load_from_token`),
the daemon's runner and its state store accept. A refusal raises a
:class:`~agent.core.errors.VerifyError` (a :class:`~agent.trust.policy.PolicyError` for policy
refusals) with its reason code, after the gate logged it once and counted it once through
:class:`RefusalMetrics` (``agent_verify_failures_total{source,reason}``).

Which check applies in which context is written once, in :data:`CHECKS` (docs/security.md holds
the same table; tests/unit/trust/test_trust_gate.py keeps the two equal):

- ``signature``, ``key_window``, ``allowed_keys``: every context. The verify step
  (:func:`agent.trust.verify.verify_for_source`: verify keys or ``verifyCommands``) does them.
- ``times`` (``exp``/``nbf``), ``stale`` (``maxTokenAge``): push, pull, offline. They guard the
  delivery, not the storage: a stored token stays applied (SPEC 31).
- ``rollback`` (the high-water mark): push, pull, restore; re-checked under the source lock by
  :meth:`TrustGate.recheck` (the only check that can change while a run waits for the lock).
- ``push_claims`` (``pushRequireJti``/``pushRequireExp``) and ``replay``: push only; replay runs
  last so that only a token every other check accepted consumes its ``jti``.
- ``chain``, ``revoked`` (verify step), ``scope``, ``jwt_rule``: every context; scope's action
  part only when an action is known (push, pull, shell, or a re-admission's first action).

Invariants: the gate holds no token; its only mutable state is the replay cache it is given and
the config the daemon swaps at reload. Messages and logs never carry a token or key material.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING, Final, Protocol

from agent.config.jwtrule import compile_rule
from agent.core.errors import AgentError, VerifyError
from agent.core.logs import fields
from agent.trust.chain import Chain
from agent.trust.policy import (
    PolicyError,
    ReplayMemory,
    check_push_claims,
    check_replay,
    check_rollback,
    check_stale,
    warn_expiring_keys,
)
from agent.trust.revocation import RevocationSet, Revoked
from agent.trust.rule import check_jwt_rule
from agent.trust.scope import SCOPE_CLAIM, check_token_scopes
from agent.trust.verify import Verification, signature_precheck, verify_for_admission

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.jws.tokens import VerifiedToken

logger = logging.getLogger(__name__)


class Context(StrEnum):
    """Where a token arrived: decides which checks of :data:`CHECKS` apply."""

    PUSH = "push"
    PULL = "pull"
    RESTORE = "restore"
    RUN = "run"
    OFFLINE = "offline"
    SHELL = "shell"


class Action(StrEnum):
    """What a token is used for: scopes and delegations grant actions (docs/security.md)."""

    PUSH = "push"
    PULL = "pull"
    CHECK = "check"
    SHELL = "shell"
    DELEGATE = "delegate"


#: The action a context implies when the caller names none (restore/run/offline imply none).
DEFAULT_ACTIONS: Final[Mapping[Context, Action]] = MappingProxyType(
    {Context.PUSH: Action.PUSH, Context.PULL: Action.PULL, Context.SHELL: Action.SHELL}
)


def stored_action(text: str) -> Action | None:
    """The :class:`Action` saved with a stored token (``None``: empty or unknown)."""
    return next((a for a in Action if a.value == text), None)


_ALL: Final = frozenset(Context)
_DELIVERY: Final = frozenset({Context.PUSH, Context.PULL, Context.OFFLINE, Context.SHELL})

#: THE table: check name -> the contexts it applies in (docs/security.md shows the same table).
CHECKS: Final[Mapping[str, frozenset[Context]]] = MappingProxyType(
    {
        "signature": _ALL,
        "key_window": _ALL,
        "allowed_keys": _ALL,
        "chain": _ALL,
        "revoked": _ALL,
        "scope": _ALL,
        "times": _DELIVERY,
        "stale": frozenset({Context.PUSH, Context.PULL, Context.OFFLINE}),
        "rollback": frozenset({Context.PUSH, Context.PULL, Context.RESTORE}),
        "push_claims": frozenset({Context.PUSH}),
        "require_exp": frozenset({Context.PUSH, Context.PULL}),
        "replay": frozenset({Context.PUSH}),
        "jwt_rule": _ALL,
    }
)

#: What each check enforces and its reason codes (the docs table's text columns).
CHECK_DOCS: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "signature": (
            "signature by a verify key, or `verifyCommands`; the header `typ` (`JWT`)",
            "`no_keys`, `no_match`, `malformed`, `wrong_type`",
        ),
        "key_window": ("verify key `notBefore`/`notAfter`", "`key_not_yet_valid`, `key_retired`"),
        "allowed_keys": ("`sources.X.allowedKeys`", "`key_not_allowed`"),
        "chain": (
            "`etchaChain` from `trustRoots`: signatures, link times, narrowing, depth",
            "`chain_untrusted_root`, `chain_bad_signature`, `chain_expired`, `chain_widens`, "
            "`chain_depth`, `wrong_type`, `scope_invalid`",
        ),
        "revoked": ("`run.revocations` and `run.revocationPaths` lists", "`revoked`"),
        "scope": (
            "verify key `sources`/`actions`, the chain's last link, `etchaScope`",
            "`scope_source`, `scope_action`, `scope_invalid`",
        ),
        "times": ("token `exp`/`nbf`", "`expired`, `not_yet_valid`"),
        "stale": ("`sources.X.maxTokenAge`", "`stale`"),
        "rollback": ("the rollback mark (`allowRollback` turns it off)", "`rollback`"),
        "push_claims": ("`run.pushRequireJti`/`pushRequireExp`", "`missing_jti`, `missing_exp`"),
        "require_exp": ("`sources.X.requireExp`", "`missing_exp`"),
        "replay": ("push `jti` seen before (replay cache)", "`replay`"),
        "jwt_rule": ("`run.jwtRule`, `sources.X.jwtRule` (CEL)", "`jwt_rule`"),
    }
)

#: Checks done by the verify step (:func:`agent.trust.verify.verify_for_source`).
VERIFY_STEP: Final = ("signature", "key_window", "allowed_keys", "chain", "revoked", "times")


class RefusalMetrics(Protocol):
    """What the gate counts refusals with (:class:`agent.daemon.metrics.Metrics` satisfies it)."""

    def verify_failure(self, source: str, reason: str) -> None:
        """Count one refusal of a token for ``source`` with ``reason``."""
        ...


class NoRefusalMetrics:
    """Counts nothing (the CLI)."""

    def verify_failure(self, source: str, reason: str) -> None:
        """Do nothing."""


class GateObserver(Protocol):
    """Told of every admission and refusal (the audit log listens here)."""

    def admitted(self, token: AdmittedToken, origin: str) -> None:
        """``token`` was admitted (``origin``: e.g. ``from 10.0.0.7``)."""
        ...

    def refused(self, source: str, context: Context, reason: str, key_id: str, origin: str) -> None:
        """A token for ``source`` was refused in ``context`` with ``reason``."""
        ...


_GATE: Final = object()


class AdmittedToken:
    """A token the gate admitted for one source in one context (a capability: only
    :meth:`TrustGate.admit` builds one).

    Attributes:
        verified: the verified token (claims, key id, pattern).
        source: the source it was admitted for (``""``: none, the CLI).
        context: the context it was admitted in.
        action: the action it was admitted for (``None``: none named, e.g. the CLI).
    """

    __slots__ = ("_chain", "action", "context", "source", "verified")

    def __init__(
        self,
        verified: VerifiedToken,
        source: str,
        context: Context,
        action: Action | None = None,
        *,
        chain: Chain | None = None,
        _origin: object = None,
    ) -> None:
        if _origin is not _GATE:
            raise TypeError("AdmittedToken is built only by agent.trust.gate.TrustGate.admit")
        self.verified = verified
        self.source = source
        self.context = context
        self.action = action
        self._chain = chain

    def __repr__(self) -> str:
        return f"AdmittedToken(source={self.source!r}, context={self.context.value!r})"

    @property
    def chain_key_ids(self) -> tuple[str, ...]:
        """The key ids of the delegation chain, root first (empty: no chain)."""
        return () if self._chain is None else self._chain.key_ids

    @property
    def raw(self) -> str:
        """The JWT text (never log it)."""
        return self.verified.raw

    @property
    def key_id(self) -> str:
        """The configured id of the key that verified it (``""`` for verify commands)."""
        return self.verified.key_id

    @property
    def iat(self) -> int | None:
        """Issued-at (Unix seconds)."""
        return self.verified.iat

    @property
    def exp(self) -> int | None:
        """Expiry (Unix seconds)."""
        return self.verified.exp

    @property
    def build_manifest(self) -> str:
        """``etchaBuildManifest``."""
        return self.verified.build_manifest

    @property
    def version(self) -> str:
        """``etchaVersion``."""
        return self.verified.version

    @property
    def jti(self) -> str:
        """The token id (``""`` when absent)."""
        return self.verified.jti


@dataclass(frozen=True, slots=True)
class _Request:
    """One admission, as the per-check functions see it."""

    gate: TrustGate
    token: VerifiedToken
    source: str
    context: Context
    mark: int | None
    now: float
    found: Verification | None = None
    action: Action | None = None


def _stale(req: _Request) -> None:
    src = req.gate.config.sources.get(req.source) if req.source else None
    check_stale(req.token, src, source_name=req.source, now=req.now)


def _rollback(req: _Request) -> None:
    src = req.gate.config.sources.get(req.source)
    check_rollback(req.token, src, source_name=req.source, high_water_iat=req.mark)


def _push_claims(req: _Request) -> None:
    check_push_claims(req.token, req.gate.config, source_name=req.source)


def _require_exp(req: _Request) -> None:
    """``sources.X.requireExp``: a pushed or pulled token must carry ``exp``."""
    src = req.gate.config.sources.get(req.source) if req.source else None
    if src is not None and src.require_exp and not req.token.exp:
        raise PolicyError(
            f"source {req.source}: expected a token with an exp (sources.{req.source}.requireExp), "
            "got none",
            "missing_exp",
            key_id=req.token.key_id,
        )


def _replay(req: _Request) -> None:
    check_replay(req.token, req.gate.replay, source_name=req.source, now=req.now)


def _scope(req: _Request) -> None:
    found = req.found
    check_token_scopes(
        req.token.claims,
        key_scope=found.key_scope if found is not None else None,
        chain_scope=found.chain.scope if found is not None and found.chain is not None else None,
        source=req.source,
        action=req.action.value if req.action is not None else None,
        key_id=req.token.key_id,
    )


def _jwt_rule(req: _Request) -> None:
    check_jwt_rule(req.token, req.gate.config, req.source, req.gate.rule)


#: The checks after the verify step, in the order they run (replay last: it consumes the jti).
_AFTER_VERIFY: Final[tuple[tuple[str, Callable[[_Request], None]], ...]] = (
    ("scope", _scope),
    ("stale", _stale),
    ("rollback", _rollback),
    ("push_claims", _push_claims),
    ("require_exp", _require_exp),
    ("jwt_rule", _jwt_rule),
    ("replay", _replay),
)


def docs_table() -> str:
    """:data:`CHECKS` as the Markdown table in docs/security.md (a test keeps them equal)."""
    contexts = list(Context)
    lines = [
        "| check | enforces | refusal reasons | " + " | ".join(c.value for c in contexts) + " |",
        "|---|---|---|" + "---|" * len(contexts),
    ]
    for name, where in CHECKS.items():
        what, reasons = CHECK_DOCS[name]
        marks = " | ".join("yes" if c in where else "no" for c in contexts)
        lines.append(f"| `{name}` | {what} | {reasons} | {marks} |")
    return "\n".join(lines) + "\n"


def checks_for(context: Context) -> tuple[str, ...]:
    """The names of the checks that apply in ``context``, in table order."""
    return tuple(name for name, where in CHECKS.items() if context in where)


class _NoReplay:
    def remember(self, jti: str, exp: float | None, *, now: float | None = None) -> bool:
        return True


class TrustGate:
    """Admits tokens (see the module docstring).

    Args:
        config: the loaded config (the daemon replaces :attr:`config` at reload).
        marks: the rollback mark of a source (default: none).
        replay: the push ``jti`` memory (default: remembers nothing).
        on_replay: awaited after a push ``jti`` was remembered (the daemon persists the cache).
        metrics: counts refusals (default: nothing).
        observer: told of every admission and refusal (default: nobody).
        clock: Unix time.
    """

    def __init__(
        self,
        config: Config,
        *,
        marks: Callable[[str], int | None] | None = None,
        replay: ReplayMemory | None = None,
        on_replay: Callable[[], Awaitable[None]] | None = None,
        metrics: RefusalMetrics | None = None,
        observer: GateObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.observer = observer
        self.replay: ReplayMemory = replay if replay is not None else _NoReplay()
        self._marks = marks
        self._on_replay = on_replay
        self._metrics: RefusalMetrics = metrics if metrics is not None else NoRefusalMetrics()
        self._clock = clock
        self._pulled: tuple[Revoked, ...] = ()
        self._rules: dict[str, object] = {}

    def set_pulled_revocations(self, entries: Sequence[Revoked]) -> None:
        """Replace the revocations pulled from ``run.revocationPaths`` (the daemon calls this).

        The effective set is ``run.revocations`` plus these; every later admission (and so every
        re-admission before a run) uses it.
        """
        self._pulled = tuple(entries)

    def revocations(self) -> RevocationSet:
        """The effective revocations: ``run.revocations`` plus the pulled lists."""
        return RevocationSet.from_config(self.config, self._pulled)

    def rule(self, text: str) -> object:
        """The compiled ``jwtRule`` program of ``text`` (compiled once per gate).

        Raises:
            RuleError: it does not compile (the config load refuses such a rule first).
        """
        program = self._rules.get(text)
        if program is None:
            program = self._rules[text] = compile_rule(text)
        return program

    def mark(self, source: str) -> int | None:
        """The source's rollback mark now."""
        return self._marks(source) if self._marks is not None and source else None

    async def admit(
        self,
        raw: str,
        source: str,
        context: Context,
        *,
        origin: str = "",
        now: float | None = None,
        action: Action | None = None,
    ) -> AdmittedToken:
        """Run every check :data:`CHECKS` lists for ``context``; admit or refuse ``raw``.

        Args:
            raw: the JWT text.
            source: the source it is for (``""``: none, only with :attr:`Context.OFFLINE`).
            context: where it arrived.
            origin: for the log line, e.g. ``from 10.0.0.7`` or ``from https://host/x.jwt``.
            now: Unix time (default: the clock); key windows, times and maxTokenAge use it.
            action: what the token is for (default: :data:`DEFAULT_ACTIONS` of ``context``;
                a check-mode push passes :attr:`Action.CHECK`, a re-admission the action the
                token was first admitted with).

        Returns:
            The admitted token.

        Raises:
            VerifyError: a refusal (logged and counted); ``PolicyError`` for policy reasons.
            AgentError: the token could not be checked at all (e.g. a verify key does not
                parse); logged, not counted.
        """
        current = self._clock() if now is None else now
        applies = checks_for(context)
        effective = action if action is not None else DEFAULT_ACTIONS.get(context)
        try:
            found = await self._checked(raw, source, context, current, effective)
            verified = found.token
        except VerifyError as exc:
            self.refused(source, context, exc, origin=origin)
            raise
        except AgentError as exc:
            self._log(
                context,
                "Source %s: %s: token could not be verified: %s",
                source,
                _what(context, origin),
                exc,
            )
            raise
        if "replay" in applies and verified.jti and self._on_replay is not None:
            await self._on_replay()
        admitted = AdmittedToken(
            verified, source, context, effective, chain=found.chain, _origin=_GATE
        )
        if self.observer is not None:
            self.observer.admitted(admitted, origin)
        return admitted

    async def _checked(
        self, raw: str, source: str, context: Context, now: float, action: Action | None
    ) -> Verification:
        """The verify step, then every later check of ``context`` (raises the refusal)."""
        applies = checks_for(context)
        found = await verify_for_admission(
            raw,
            config=self.config,
            source=source,
            now=now,
            check_times="times" in applies,
            revoked=self.revocations(),
        )
        req = _Request(self, found.token, source, context, self.mark(source), now, found, action)
        for name, check in _AFTER_VERIFY:
            if name in applies:
                check(req)
        return found

    def recheck(self, token: AdmittedToken, *, origin: str = "") -> None:
        """Under the source lock: re-check what can change while a run waits (the rollback mark).

        Raises:
            PolicyError: ``rollback`` (logged and counted).
        """
        if token.context not in CHECKS["rollback"]:
            return
        req = _Request(
            self,
            token.verified,
            token.source,
            token.context,
            self.mark(token.source),
            self._clock(),
        )
        try:
            _rollback(req)
        except PolicyError as exc:
            self.refused(token.source, token.context, exc, origin=f"{origin} (under lock)".strip())
            raise

    def freeze_check(self, token: AdmittedToken, *, origin: str = "") -> bool:
        """A pull that brought nothing new (304, same bytes): is the token in hand now stale?

        The token stays applied (SPEC 31); a stale one is logged and counted as ``stale`` on
        every such pull (the freeze attack ``maxTokenAge`` exists for).

        Returns:
            Whether the token in hand is over ``maxTokenAge``.
        """
        req = _Request(self, token.verified, token.source, Context.PULL, None, self._clock())
        try:
            _stale(req)
        except PolicyError as exc:
            self.refused(token.source, Context.PULL, exc, origin=origin)
            return True
        return False

    def refused(self, source: str, context: Context, exc: VerifyError, *, origin: str = "") -> None:
        """Log and count one refusal (every refusal the gate raises went through here once)."""
        what = _what(context, origin)
        if isinstance(exc, PolicyError):
            key_id = exc.key_id or "(unknown)"
            self._log(
                context,
                "Source %s: %s refused (reason %s, key %s): %s",
                source or "(none)",
                what,
                exc.reason,
                key_id,
                exc,
                source=source,
                error=exc.reason,
            )
        else:
            self._log(
                context,
                "Source %s: %s refused: token did not verify (%s: %s)",
                source or "(none)",
                what,
                exc.reason,
                exc,
                source=source,
                error=exc.reason,
            )
        if context is not Context.OFFLINE:
            self._metrics.verify_failure(source, exc.reason)
        if self.observer is not None:
            key_id = exc.key_id if isinstance(exc, PolicyError) else ""
            self.observer.refused(source, context, exc.reason, key_id, origin)

    @staticmethod
    def _log(context: Context, msg: str, *args: object, source: str = "", error: str = "") -> None:
        # The CLI prints the refusal as its one error line; the daemon logs it.
        level = logging.DEBUG if context is Context.OFFLINE else logging.ERROR
        extra = fields(source=source or None, trigger=context.value, error=error or None)
        logger.log(level, msg, *args, extra=extra)


def _what(context: Context, origin: str) -> str:
    return f"{context.value} {origin}" if origin else context.value


__all__ = [
    "CHECKS",
    "CHECK_DOCS",
    "DEFAULT_ACTIONS",
    "SCOPE_CLAIM",
    "VERIFY_STEP",
    "Action",
    "AdmittedToken",
    "Context",
    "GateObserver",
    "NoRefusalMetrics",
    "RefusalMetrics",
    "TrustGate",
    "checks_for",
    "docs_table",
    "signature_precheck",
    "stored_action",
    "warn_expiring_keys",
]
