"""URL helpers shared by every HTTP user: the one ``#Header:`` parser, display and redaction.

A request spec is ``http(s)://[user:pass@]host/path[?query][#Name:value\\r\\nName2:value2]``:
everything after the first ``#`` is a header block (:func:`parse_http_path`, the one parser of it
for pull, ``getFile``, ``copy`` and ``jwt <url>``). Entries are separated by CR LF; a bare LF and
the four characters ``\\r\\n`` (as typed on a shell command line) also separate entries. Each
entry is split on its **first** ``:`` (Etcha splits on every ``:`` and loses values that contain
one). Pseudo-headers, never sent: ``skipVerify`` and ``clientSkipVerify`` (skip TLS
verification; a value of ``false``/``0``/``no``/``off`` turns it off) and
``clientTimeout:<seconds>``.

Invariants: :func:`safe_url` and :func:`redact` never let user info, a query or a header value
into a message; :func:`mask_url` is the display form for config output (structure kept, secret
values ``***``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from agent.core.errors import SourceError
from agent.core.records import Record

#: What a secret part of a URL is replaced with by :func:`mask_url` and :func:`redact`.
MASK = "***"
_SKIP_VERIFY_NAMES = frozenset({"skipverify", "clientskipverify"})
_PSEUDO_HEADERS = _SKIP_VERIFY_NAMES | {"clienttimeout"}
_FALSE_VALUES = frozenset({"false", "0", "no", "off"})
# Compiled on first use (re caches them), not at import: start-up (issue 14).
_URL_IN_TEXT = r"(?i)\bhttps?://[^\s\"'<>`]+"
_ENTRY_SPLIT = r"\r\n|\n|\\r\\n"


def split_header_block(block: str) -> list[str]:
    """The entries of a ``#`` header block (see the module docstring for the separators)."""
    return re.split(_ENTRY_SPLIT, block)


@dataclass(frozen=True, repr=False, eq=False)  # no slots: start-up (issue 14)
class HTTPPath(Record):
    """An HTTP(S) pull path split into its parts (header values may be secrets)."""

    url: str
    headers: tuple[tuple[str, str], ...]
    skip_verify: bool
    timeout: float | None

    def __repr__(self) -> str:
        return f"HTTPPath(url={safe_url(self.url)!r}, headers=<{len(self.headers)} hidden>)"


def is_http(path: str) -> bool:
    """Whether a pull path is an HTTP(S) URL rather than a local file."""
    lowered = path[:8].lower()
    return lowered.startswith(("http://", "https://"))


def safe_url(url: str) -> str:
    """The URL without user info, query, fragment or header block, for messages and logs."""
    base = url.split("#", 1)[0]
    try:
        parts = urlsplit(base)
        host = parts.hostname or ""
    except ValueError:
        return "<invalid URL>"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def mask_url(url: str) -> str:
    """An HTTP(S) URL or pull path with every secret part replaced by ``***``, for display.

    User info becomes ``***@``, each query value ``name=***`` (a bare query item ``***``), and
    each ``#Name:value`` header entry ``Name:***``. The pseudo-headers ``skipVerify``,
    ``clientSkipVerify`` and ``clientTimeout`` are options, not secrets, and stay visible.

    Args:
        url: the URL or pull path; a value that is not ``http(s)://`` is returned unchanged.

    Returns:
        The masked text (``***`` for a URL that cannot be parsed).
    """
    if not is_http(url):
        return url
    base, sep, block = url.partition("#")
    try:
        parts = urlsplit(base)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}={MASK}" if eq else (MASK if name else "")
        for name, eq, _ in (item.partition("=") for item in parts.query.split("&"))
    )
    shown = urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if not sep:
        return shown
    entries = []
    for entry in split_header_block(block):
        name, colon, _ = entry.partition(":")
        if colon and name.strip().lower() not in _PSEUDO_HEADERS:
            entries.append(f"{name}:{MASK}")
        else:
            entries.append(entry)
    return shown + "#" + "\r\n".join(entries)


def mask_urls_in_text(text: str) -> str:
    """``text`` with :func:`mask_url` applied to it (when it is a URL) or to each URL inside it.

    Args:
        text: any config string (a pull path, a var, a command line).

    Returns:
        The text with user info, query values and header values of its URLs masked.
    """
    if is_http(text):
        return mask_url(text)
    if "://" not in text:
        return text
    return re.sub(_URL_IN_TEXT, lambda m: mask_url(m.group(0)), text)


def redact(text: str, url: str) -> str:
    """``text`` (e.g. an exception message) without the secret parts of ``url``.

    The full URL and its base become :func:`safe_url`; any remaining occurrence of its user
    info, password, query or header block becomes ``***``.

    Args:
        text: the text that may quote ``url`` or pieces of it.
        url: the URL (or pull path) whose secrets must not appear.

    Returns:
        The redacted text.
    """
    base, _, block = url.partition("#")
    safe = safe_url(url)
    for whole in (url, base):
        if whole:
            text = text.replace(whole, safe)
    secrets: list[str] = []
    if block:
        secrets.append(block)
        secrets.extend(entry.partition(":")[2].strip() for entry in split_header_block(block))
    try:
        parts = urlsplit(base)
    except ValueError:
        parts = None
    if parts is not None:
        userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
        secrets += [userinfo, *userinfo.split(":"), parts.query, parts.fragment]
        secrets.extend(item.partition("=")[2] for item in parts.query.split("&"))
    for secret in sorted({s for s in secrets if len(s) >= 2}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def parse_http_path(path: str, *, what: str = "pull path", strict: bool = False) -> HTTPPath:
    """Split an HTTP(S) request spec into URL, headers and pseudo-header options.

    Args:
        path: ``<url>[#Name:value\\r\\nName:value...]``.
        what: how messages name the spec (``pull path``, ``copy source``...).
        strict: an entry without ``:`` is an error (else it is a header with an empty value).

    Returns:
        The parsed spec.

    Raises:
        SourceError: ``clientTimeout`` is not a positive number of seconds, or (``strict``) an
            entry has no ``:``.
    """
    url, sep, block = path.partition("#")
    headers: list[tuple[str, str]] = []
    skip_verify = False
    timeout: float | None = None
    for entry in split_header_block(block) if sep else ():
        if not entry.strip():
            continue
        name, colon, value = (part.strip() for part in entry.partition(":"))
        if strict and (not colon or not name):
            raise SourceError(
                f"{what} {safe_url(url)}: expected URL headers as #Name:value, got a part "
                "without ':'"
            )
        lowered = name.lower()
        if lowered in _SKIP_VERIFY_NAMES:
            skip_verify = value.lower() not in _FALSE_VALUES
        elif lowered == "clienttimeout":
            timeout = _seconds(value, url, what)
        elif name:
            headers.append((name, value))
    return HTTPPath(url=url, headers=tuple(headers), skip_verify=skip_verify, timeout=timeout)


def _seconds(value: str, url: str, what: str) -> float:
    try:
        timeout = float(value)
    except ValueError:
        timeout = -1.0
    if not timeout > 0 or timeout != timeout or timeout == float("inf"):
        raise SourceError(
            f"{what} {safe_url(url)}: expected clientTimeout to be a positive number of "
            f"seconds, got {value!r}"
        )
    return timeout
