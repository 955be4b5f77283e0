"""The one exception tree of the agent.

Every error a user can cause is an :class:`AgentError`. Its message is one line that names the
thing and says what was expected and what was got. Messages never contain key material, tokens
or secret values. Only the CLI and the HTTP handlers turn these into exit codes or statuses.

Tree::

    AgentError
    ├── UsageError          bad command-line use (exit code 2)
    ├── ConfigError         config file, override or schema problems
    ├── KeyFormatError      a key string that cannot be parsed or used
    ├── TokenError          a JWT that cannot be built or decoded
    │   └── VerifyError     a JWT that did not verify; carries a machine-readable ``reason``
    ├── RenderError         Jsonnet evaluation failures (message names file:line)
    ├── PatternError        a rendered pattern that is not a valid Pattern
    ├── CommandError        command validation or execution failures
    ├── BuildError          `agent build` failures
    └── SourceError         daemon/source failures (pull, push, state)
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent reports to a user.

    Args:
        message: one line, naming the thing, what was expected and what was got.
        hint: optional advice on how to fix it.
    """

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(AgentError):
    """The command line was used wrongly (exit code 2)."""


class ConfigError(AgentError):
    """A config file, override or value does not fit the schema."""


class KeyFormatError(AgentError):
    """A key string cannot be parsed, or is the wrong kind of key for the operation."""


class TokenError(AgentError):
    """A JWT cannot be built or decoded."""


class VerifyError(TokenError):
    """A JWT did not verify.

    Args:
        message: human-readable reason.
        reason: one of ``no_keys``, ``no_match``, ``expired``, ``not_yet_valid``, ``malformed``,
            ``not_allowed`` (and the trust-policy reasons added later).
    """

    def __init__(self, message: str, reason: str, hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.reason = reason


class RenderError(AgentError):
    """Jsonnet could not be rendered."""


class PatternError(AgentError):
    """A rendered document is not a valid Pattern."""


class CommandError(AgentError):
    """A command list is invalid, or a command failed."""


class BuildError(AgentError):
    """`agent build` failed."""


class SourceError(AgentError):
    """A source could not be pulled, pushed, stored or run."""


def json_kind(value: object) -> str:
    """Name a JSON value's type for "expected …, got …" messages (``"a string"``, ``"null"``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "a list"
    from collections.abc import Mapping

    if isinstance(value, Mapping):
        return "an object"
    return type(value).__name__
