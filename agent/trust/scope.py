"""Scopes: which sources and actions a key, a delegation or a token may be used for.

A scope is a set of source names (``*``: all) and a set of actions (``push``, ``pull``,
``check``, ``shell``, ``delegate``). It comes from a verify key's object form
(``{key, sources, actions}``), a delegation's ``etchaDelegation`` claim, or a pattern token's own
``etchaScope`` claim. Every scope that applies to a token must permit the token's source and
action; an action is permitted when listed, and a check-mode push (``check``) is also permitted
by ``push``.

Invariants: claims are parsed strictly (:func:`parse_scope_claim`): an unknown key, a duplicate
entry, an empty list or a wrong type is ``scope_invalid`` naming the claim, never ignored. No
I/O, no mutable state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from agent.config.fields import ACTION_NAMES
from agent.core.errors import json_kind
from agent.trust.policy import PolicyError

if TYPE_CHECKING:
    from agent.config.values import VerifyKeyEntry

__all__ = [
    "ALL_SOURCES",
    "SCOPE_CLAIM",
    "Scope",
    "check_scope",
    "check_token_scopes",
    "parse_scope_claim",
    "scope_of_entry",
]

#: The claim a pattern token may carry to narrow itself (``build.scope``).
SCOPE_CLAIM: Final = "etchaScope"
#: The source name meaning "every source".
ALL_SOURCES: Final = "*"
_SCOPE_KEYS: Final = ("actions", "sources")
#: Most entries accepted in one list (a bound on hostile claims).
_MAX_ENTRIES: Final = 256


@dataclass(frozen=True, slots=True)
class Scope:
    """Sources and actions; ``None`` for no limit.

    Attributes:
        sources: the source names (``None``: all, also written ``*``).
        actions: the action names (``None``: all).
    """

    sources: frozenset[str] | None = None
    actions: frozenset[str] | None = None

    def permits_source(self, source: str) -> bool:
        """Whether ``source`` is inside (``""``, no source, always is)."""
        return not source or self.sources is None or source in self.sources

    def permits_action(self, action: str) -> bool:
        """Whether ``action`` is inside; ``check`` is also permitted by ``push``."""
        if self.actions is None:
            return True
        return action in self.actions or (action == "check" and "push" in self.actions)

    def widens(self, parent: Scope) -> str:
        """What of this scope is outside ``parent`` (``""``: it narrows or equals it)."""
        if parent.sources is not None:
            if self.sources is None:
                return f"sources * beyond the parent's {sorted(parent.sources)}"
            extra = sorted(self.sources - parent.sources)
            if extra:
                return f"sources {extra} beyond the parent's {sorted(parent.sources)}"
        if parent.actions is not None:
            if self.actions is None:
                return f"all actions beyond the parent's {sorted(parent.actions)}"
            extra = sorted(self.actions - parent.actions)
            if extra:
                return f"actions {extra} beyond the parent's {sorted(parent.actions)}"
        return ""

    def describe(self) -> str:
        """``sources [...] actions [...]`` for messages and ``agent jwt``."""
        sources = "*" if self.sources is None else ",".join(sorted(self.sources))
        actions = "*" if self.actions is None else ",".join(sorted(self.actions))
        return f"sources {sources}, actions {actions}"


def _sources(names: Iterable[str]) -> frozenset[str] | None:
    found = frozenset(names)
    return None if ALL_SOURCES in found else found


def scope_of_entry(entry: VerifyKeyEntry) -> Scope | None:
    """The scope of a configured verify key (``None``: the key has no limits)."""
    if entry.sources is None and entry.actions is None:
        return None
    sources = None if entry.sources is None else _sources(entry.sources)
    actions = None if entry.actions is None else frozenset(entry.actions)
    return Scope(sources, actions)


def _invalid(claim: str, message: str) -> PolicyError:
    return PolicyError(f"claim {claim}: {message}", "scope_invalid")


def _name_list(value: Any, claim: str, allowed: tuple[str, ...]) -> list[str]:
    if not isinstance(value, list):
        raise _invalid(claim, f"expected a list of strings, got {json_kind(value)}")
    if not value:
        raise _invalid(claim, "expected a non-empty list, got an empty one")
    if len(value) > _MAX_ENTRIES:
        raise _invalid(claim, f"expected at most {_MAX_ENTRIES} entries, got {len(value)}")
    seen: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise _invalid(claim, f"expected non-empty strings, got {json_kind(item)}")
        if allowed and item not in allowed:
            raise _invalid(claim, f"expected one of {', '.join(allowed)}, got {item[:40]!r}")
        if item in seen:
            raise _invalid(claim, f"expected distinct entries, got {item[:40]!r} twice")
        seen.append(item)
    return seen


def parse_scope_claim(value: Any, claim: str) -> Scope:
    """Parse ``etchaDelegation`` or ``etchaScope``: ``{sources: [...], actions: [...]}``.

    Args:
        value: the claim value as decoded.
        claim: the claim name, for messages.

    Raises:
        PolicyError: ``scope_invalid`` (not an object, unknown key, missing, empty or duplicate
            entries, unknown action).
    """
    if not isinstance(value, dict):
        raise _invalid(claim, f"expected an object {{sources, actions}}, got {json_kind(value)}")
    for key in value:
        if key not in _SCOPE_KEYS:
            raise _invalid(claim, f"expected only keys sources, actions, got {str(key)[:40]!r}")
    for key in _SCOPE_KEYS:
        if key not in value:
            raise _invalid(f"{claim}.{key}", "expected a list, got none")
    sources = _name_list(value["sources"], f"{claim}.sources", ())
    actions = _name_list(value["actions"], f"{claim}.actions", ACTION_NAMES)
    return Scope(_sources(sources), frozenset(actions))


def check_scope(scope: Scope, *, source: str, action: str | None, what: str, key_id: str) -> None:
    """Refuse a token whose source or action is outside ``scope``.

    Args:
        scope: the scope that applies.
        source: the source the token is for (``""``: none, not checked).
        action: the action (``None``: none known, not checked).
        what: where the scope comes from, for the message (e.g. ``the delegation chain``).
        key_id: the signer's key id, carried by the error.

    Raises:
        PolicyError: ``scope_source`` or ``scope_action``.
    """
    if not scope.permits_source(source):
        raise PolicyError(
            f"source {source}: expected a token whose scope ({what}) includes this source, "
            f"got {scope.describe()}",
            "scope_source",
            key_id=key_id,
        )
    if action is not None and not scope.permits_action(action):
        need = "check or push" if action == "check" else action
        raise PolicyError(
            f"source {source or '(none)'}: expected a token whose scope ({what}) grants "
            f"{need}, got {scope.describe()}",
            "scope_action",
            key_id=key_id,
        )


def check_token_scopes(
    claims: Mapping[str, Any],
    *,
    key_scope: Scope | None,
    chain_scope: Scope | None,
    source: str,
    action: str | None,
    key_id: str,
) -> None:
    """Every scope that applies to a token must permit its source and action.

    Args:
        claims: the verified claims (``etchaScope`` is parsed strictly when present).
        key_scope: the matching verify key's scope.
        chain_scope: the delegation chain's last link's scope.
        source: the source (``""``: not checked).
        action: the action (``None``: not checked).
        key_id: the signer's key id.

    Raises:
        PolicyError: ``scope_invalid``, ``scope_source`` or ``scope_action``.
    """
    scopes: list[tuple[str, Scope]] = []
    if key_scope is not None:
        scopes.append((f"verify key {key_id or '(no id)'}", key_scope))
    if chain_scope is not None:
        scopes.append(("the delegation chain's last link", chain_scope))
    if SCOPE_CLAIM in claims:
        try:
            scopes.append((SCOPE_CLAIM, parse_scope_claim(claims[SCOPE_CLAIM], SCOPE_CLAIM)))
        except PolicyError as exc:
            where = source or "(none)"
            raise PolicyError(f"source {where}: {exc}", exc.reason, key_id=key_id) from None
    for what, scope in scopes:
        check_scope(scope, source=source, action=action, what=what, key_id=key_id)
