"""The ``publish`` section's values: artifacts and the file mode (`agent publish`).

``expiresIn`` is required and ``resignBefore`` must be shorter (default: a quarter of it): the
token-manager pitfall where ``resignBefore > expiryTime`` silently does nothing is a config error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from agent.config.bad import Bad, duration_value, expect
from agent.core.durations import format_go_duration
from agent.core.errors import json_kind
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True, repr=False, eq=False)
class PublishArtifact(Record):
    """One ``publish.artifacts.<name>``: a pattern kept fresh at its destinations.

    Args:
        name: the artifact name.
        pattern: the pattern path.
        dest: file paths or http(s) URLs, in order.
        expires_in: the lifetime of each published token (seconds, > 0).
        resign_before: re-sign when a token expires within this (seconds, < ``expires_in``).
    """

    name: str
    pattern: str
    dest: tuple[str, ...]
    expires_in: float
    resign_before: float


_ARTIFACT_KEYS = ("dest", "expiresIn", "pattern", "resignBefore")


def _artifact_duration(item: Mapping[str, Any], key: str, name: str) -> float | None:
    value = item.get(key)
    if value is None:
        return None
    try:
        return duration_value(value)
    except Bad as exc:
        raise Bad(str(exc), sub=f".{name}.{key}") from None


def _artifact_dest(dest: Any, name: str) -> tuple[str, ...]:
    if isinstance(dest, str):
        dest = [dest]
    if not isinstance(dest, list | tuple) or not dest:
        raise Bad("expected a non-empty list of paths or URLs", sub=f".{name}.dest")
    for index, entry in enumerate(dest):
        where = f".{name}.dest[{index}]"
        if not isinstance(entry, str) or not entry.strip():
            raise Bad(f"expected a path or URL, got {json_kind(entry)}", sub=where)
        scheme = entry.split("://", 1)[0].lower() if "://" in entry else ""
        if scheme and scheme not in ("http", "https"):
            raise Bad(f"expected a file path or an http(s) URL, got a {scheme}:// URL", sub=where)
    return tuple(dest)


def _artifact(name: str, item: Any) -> PublishArtifact:
    if not isinstance(item, Mapping):
        raise Bad(f"expected an object, got {json_kind(item)}", sub=f".{name}")
    for key in item:
        if key not in _ARTIFACT_KEYS:
            raise Bad("unknown key", sub=f".{name}.{key}", choices=_ARTIFACT_KEYS)
    pattern = item.get("pattern")
    if not isinstance(pattern, str) or not pattern:
        raise Bad(f"expected a pattern path, got {json_kind(pattern)}", sub=f".{name}.pattern")
    dest = _artifact_dest(item.get("dest"), name)
    expires_in = _artifact_duration(item, "expiresIn", name)
    if not expires_in:
        raise Bad("expected a duration > 0 (it is required), got none", sub=f".{name}.expiresIn")
    resign_before = _artifact_duration(item, "resignBefore", name)
    if resign_before is None:
        resign_before = expires_in / 4
    if resign_before >= expires_in:
        raise Bad(
            f"expected resignBefore shorter than expiresIn ({format_go_duration(expires_in)}), "
            f"got {format_go_duration(resign_before)}",
            sub=f".{name}.resignBefore",
        )
    return PublishArtifact(name, pattern, dest, expires_in, resign_before)


def parse_artifacts(value: Any) -> dict[str, PublishArtifact]:
    """``publish.artifacts``: name -> :class:`PublishArtifact` (every rule checked)."""
    expect(value, isinstance(value, Mapping), "an object of artifacts")
    return {str(name): _artifact(str(name), item) for name, item in sorted(value.items())}


def parse_file_mode(value: Any) -> str:
    """``publish.fileMode``: an octal string such as ``'0640'``."""
    expect(value, isinstance(value, str), "an octal string such as '0644'")
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise Bad(f"expected an octal mode such as '0644' or '0640', got {value!r}")
    return str(value)


def artifacts_json(value: Mapping[str, PublishArtifact]) -> dict[str, Any]:
    """The JSON form of ``publish.artifacts`` (loadable again by :func:`parse_artifacts`)."""
    return {
        name: {
            "dest": list(a.dest),
            "expiresIn": format_go_duration(a.expires_in),
            "pattern": a.pattern,
            "resignBefore": format_go_duration(a.resign_before),
        }
        for name, a in value.items()
    }


__all__ = ["PublishArtifact", "artifacts_json", "parse_artifacts", "parse_file_mode"]
