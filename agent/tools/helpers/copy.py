"""``copy``: read a local path or an ``http(s)`` URL, for a destination file or stdout.

Sources are read through :mod:`urllib` with a timeout and a size bound; a ``#Header:value\\r\\n...``
fragment holds request headers, and header values never appear in messages. ``copy remove``
deletes only a regular file whose contents equal the source's (see :mod:`agent.tools.helpers.file`).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from agent.core.errors import CommandError, SourceError, UsageError
from agent.net.urls import parse_http_path, safe_url
from agent.tools.helpers.fs import DEFAULT_FILE_PERMS, MAX_COPY_BYTES
from agent.tools.helpers.fs import read_file as _read_file  # the name read_source's body uses

if TYPE_CHECKING:
    from agent.net.http import HTTPClient

#: Permission bits ``copy`` takes from a local source (set-id and sticky bits are never copied).
COPY_PERMS_MASK = 0o777
#: Seconds before an HTTP source request gives up.
HTTP_TIMEOUT = 60.0


def read_source(
    src: str,
    *,
    max_bytes: int = MAX_COPY_BYTES,
    timeout: float = HTTP_TIMEOUT,
    client: HTTPClient | None = None,
) -> bytes:
    """Read a local path or an ``http(s)`` URL (``#Name:value\\r\\n...`` = request headers).

    Args:
        src: path or URL.
        max_bytes: the most bytes accepted.
        timeout: seconds for the HTTP request (a ``#clientTimeout:`` entry overrides it).
        client: the HTTP client (pass one built from ``httpClient.*``); default: verify
            against the system CAs, same-origin redirects only.

    Returns:
        The bytes.

    Raises:
        UsageError: a header entry without ``:``, or a bad ``clientTimeout``.
        CommandError: unreadable, non-2xx, too large, or the request failed. The message names the
            URL without its user info, query or fragment, so secrets never leak.
    """
    if not src.startswith(("http://", "https://")):
        return _read_file(Path(src), max_bytes)
    try:
        parsed = parse_http_path(src, what="copy source", strict=True)
    except SourceError as exc:
        raise UsageError(str(exc)) from None
    shown = safe_url(parsed.url)
    from agent.net.http import HTTPClient  # lazy: the HTTP client, only for a URL source

    try:
        resp = (client or HTTPClient()).request(
            parsed.url,
            headers=parsed.headers,
            timeout=parsed.timeout if parsed.timeout is not None else timeout,
            max_bytes=max_bytes,
            body_statuses=range(200, 300),
            skip_verify=parsed.skip_verify,
        )
    except SourceError as exc:  # RequestError, FingerprintMismatch
        raise CommandError(f"copy source {shown}: {exc}") from None
    if not 200 <= resp.status < 300:
        raise CommandError(f"copy source {shown}: expected HTTP 2xx, got {resp.status}")
    return resp.body


def source_perms(src: str) -> int:
    """The permission bits ``copy`` gives a destination when ``-p`` is not given.

    A local source's permission bits (``0777`` mask: set-id and sticky bits are never copied, so
    a copy made as root cannot become a set-uid program); ``0644`` for a URL.

    Raises:
        CommandError: the local source cannot be stat-ed.
    """
    if src.startswith(("http://", "https://")):
        return DEFAULT_FILE_PERMS
    try:
        st = os.stat(src)
    except OSError as exc:
        raise CommandError(f"{src}: cannot read: {exc.strerror}") from exc
    return stat.S_IMODE(st.st_mode) & COPY_PERMS_MASK
