"""``copy``: read a local path or an ``http(s)`` URL, for a destination file or stdout.

Sources are read through :mod:`urllib` with a timeout and a size bound; a ``#Header:value\\r\\n...``
fragment holds request headers, and header values never appear in messages. ``copy remove``
deletes only a regular file whose contents equal the source's (see :mod:`agent.tools.helpers.file`).
"""

from __future__ import annotations

import os
import re
import stat
import urllib.error
import urllib.request
from pathlib import Path

from agent.core.errors import CommandError, UsageError
from agent.tools.helpers.fs import DEFAULT_FILE_PERMS, MAX_COPY_BYTES
from agent.tools.helpers.fs import read_file as _read_file  # the name read_source's body uses

#: Permission bits ``copy`` takes from a local source (set-id and sticky bits are never copied).
COPY_PERMS_MASK = 0o777
#: Seconds before an HTTP source request gives up.
HTTP_TIMEOUT = 60.0

_HEADER_SPLIT = re.compile(r"\r\n|\n|\\r\\n")


def _parse_headers(fragment: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    for part in _HEADER_SPLIT.split(fragment):
        if not part.strip():
            continue
        key, sep, value = part.partition(":")
        if not sep or not key.strip():
            raise UsageError("copy: expected URL headers as #Name:value, got a part without ':'")
        headers[key.strip()] = value.strip()
    return headers


def read_source(
    src: str, *, max_bytes: int = MAX_COPY_BYTES, timeout: float = HTTP_TIMEOUT
) -> bytes:
    """Read a local path or an ``http(s)`` URL (``#Name:value\\r\\n...`` = request headers).

    Args:
        src: path or URL.
        max_bytes: the most bytes accepted.
        timeout: seconds for the HTTP request.

    Returns:
        The bytes.

    Raises:
        CommandError: unreadable, non-2xx, too large, or the request failed. The message names the
            URL without its fragment, so header values never leak.
    """
    if not src.startswith(("http://", "https://")):
        return _read_file(Path(src), max_bytes)
    url, _, fragment = src.partition("#")
    request = urllib.request.Request(url, headers=_parse_headers(fragment))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # noqa: S310 (http/https only)
            data: bytes = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise CommandError(f"copy source {url}: expected HTTP 2xx, got {exc.code}") from exc
    except urllib.error.URLError as exc:
        raise CommandError(f"copy source {url}: request failed: {exc.reason}") from exc
    except (OSError, ValueError) as exc:
        raise CommandError(f"copy source {url}: request failed: {exc}") from exc
    if len(data) > max_bytes:
        raise CommandError(f"copy source {url}: expected at most {max_bytes} bytes, got more")
    return data


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
