"""Masking secrets in the JSON form of a config (``agent show-config``).

Responsibility: decide, by schema and by key name, which values of :meth:`Config.to_dict`
output are secrets, and replace them with :data:`MASK`.

Invariants:

- Listed schema fields (:data:`SECRET_PATHS`) are always masked; fields of a public kind
  (numbers, booleans, durations, verify keys), key file paths and key ids never are.
- In free-form JSON (vars, exec env, commands) every key whose name contains one of
  :data:`SECRET_WORDS` is masked, except public-key names; every URL in a string loses its user
  info, query values and ``#Header:`` values (:mod:`agent.net.fetch`).
- Empty values stay empty, so "unset" remains visible. Names (sources, targets, linters) are
  names, never masked.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from agent.config.fields import HTTP_CLIENT, RECORDS, SECTIONS, Field
from agent.net.urls import mask_url, mask_urls_in_text

#: What a secret value is replaced with by :meth:`Config.masked_dict`.
MASK = "***"

#: A key whose name contains one of these (case-insensitive) holds a secret, anywhere.
SECRET_WORDS = ("password", "secret", "token", "key", "credential", "auth", "private")
_SECRET_NAME = re.compile("|".join(SECRET_WORDS), re.IGNORECASE)
#: Name parts that are public although they contain "key": ``publicKey``, ``verifyKeys``.
_PUBLIC_NAME = re.compile(r"public[_-]?keys?|verify[_-]?keys?", re.IGNORECASE)
#: Schema fields that are secrets whatever their name.
SECRET_PATHS = frozenset(
    {
        ("build", "signingKey"),
        ("run", "systemMetricsKey"),
        ("run", "systemPprofKey"),
        ("run", "tlsKeyBase64"),
    }
)
#: Field kinds that never hold a secret: numbers, booleans, durations, public keys, key ids.
_PUBLIC_KINDS = frozenset(
    {
        "bool",
        "int",
        "posint",
        "duration",
        "duration_opt",
        "rate",
        "choice",
        "port",
        "verifykeys",
        "trustroots",
        "revocations",
        "scope",
    }
)
#: Schema string lists whose items are URLs or paths (masked as URLs, see agent.net.fetch.mask_url).
_URL_FIELDS = frozenset({"pullPaths", "webhookPaths"})


def secret_name(name: str) -> bool:
    """Whether a key name marks a secret (``apiKey``, ``DB_PASSWORD``; not ``sshPublicKey``)."""
    return bool(_SECRET_NAME.search(name)) and bool(_SECRET_NAME.search(_PUBLIC_NAME.sub("", name)))


def field_is_secret(section: str, f: Field) -> bool:
    """A schema field is masked when listed, or when it is a free string with a secret name.

    Paths to key files (``signingKeyPath``, ``tlsKeyPath``), key ids (``allowedKeys``) and
    values of a public kind (durations such as ``maxTokenAge``, sizes, booleans, verify keys)
    are not secrets, whatever their name.
    """
    if (section, f.key) in SECRET_PATHS:
        return True
    if f.kind in _PUBLIC_KINDS or f.key.endswith(("Path", "File")) or f.key == "allowedKeys":
        return False
    return secret_name(f.key)


def _mask_record(value: Any, fields: Sequence[Field], section: str) -> Any:
    """Mask one typed record (a section, a source or a target) by its schema."""
    if not isinstance(value, dict):
        return _mask(value)
    by_key = {f.key: f for f in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        f = by_key.get(key)
        if f is None:
            out[key] = _mask({key: item})[key]
        elif field_is_secret(section, f):
            out[key] = MASK if item not in ("", None) else item
        elif f.kind in _PUBLIC_KINDS:
            out[key] = item
        elif f.kind in ("strmap", "linters"):  # keys are names (sources, linters), not settings
            out[key] = {k: _mask(v) for k, v in item.items()} if isinstance(item, dict) else item
        elif key in _URL_FIELDS and isinstance(item, list):
            out[key] = [mask_url(v) if isinstance(v, str) else _mask(v) for v in item]
        else:
            out[key] = _mask(item)
    return out


def _mask(value: Any) -> Any:
    """Mask raw JSON (vars, env, exec, commands): secret-named keys, and URL secrets in strings."""
    if isinstance(value, dict):
        return {
            k: MASK if secret_name(k) and v not in ("", None) else _mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        return mask_urls_in_text(value)
    return value


def mask_config(data: dict[str, Any]) -> dict[str, Any]:
    """:meth:`Config.to_dict` output with every secret masked (see :meth:`Config.masked_dict`)."""
    out: dict[str, Any] = {}
    for section, value in data.items():
        if section in SECTIONS:
            out[section] = _mask_record(value, SECTIONS[section], section)
        elif section == "httpClient":
            out[section] = _mask_record(value, HTTP_CLIENT, section)
        elif section in RECORDS and isinstance(value, dict):
            fields = RECORDS[section]
            out[section] = {n: _mask_record(r, fields, section) for n, r in value.items()}
        else:
            out[section] = _mask(value)
    return out


__all__ = ["MASK", "SECRET_PATHS", "SECRET_WORDS", "field_is_secret", "mask_config", "secret_name"]
