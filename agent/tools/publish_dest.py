"""Where `agent publish` writes: a file or an HTTP(S) URL (WebDAV-style ``PUT``).

A destination reads what is published (:class:`Published`: the token text, or ``None`` when
nothing is there, and the HTTP ``ETag``) and writes a new token:

- a file: through :func:`agent.core.atomicio.atomic_write` (temp file, fsync, rename) with the
  configured mode (``publish.fileMode``, default 0644);
- a URL: ``PUT`` with ``If-Match: <etag>`` when a token with an ETag was read, else
  ``If-None-Match: *`` when nothing was there; a ``412`` is :class:`Conflict` (the caller reads
  and decides again, once). Other statuses and transport failures are :class:`SourceError`.

The URL may carry a ``#Name:value`` header block as pull paths do (e.g. an ``Authorization``
header); messages show the URL without user info, query or headers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.core.atomicio import atomic_write
from agent.core.errors import SourceError
from agent.net.http import HTTPClient
from agent.net.urls import is_http, parse_http_path, safe_url

#: Statuses a GET may answer when nothing is published.
_ABSENT = frozenset({404, 410})


@dataclass(frozen=True, slots=True)
class Published:
    """What a destination holds: the text (``None``: nothing is there) and its ``ETag``."""

    raw: str | None
    etag: str = ""


class Conflict(SourceError):
    """A conditional ``PUT`` answered ``412``: someone else wrote the destination meanwhile."""


class Destination(Protocol):
    """One place an artifact is published to."""

    @property
    def shown(self) -> str:
        """The destination as logs and reports show it (no secrets)."""
        ...

    def read(self) -> Published:
        """What is published now."""
        ...

    def write(self, token: str, published: Published) -> None:
        """Write ``token`` over ``published`` (what :meth:`read` returned)."""
        ...


class FileDest:
    """A file destination (written atomically with ``mode``)."""

    def __init__(self, path: Path, *, mode: int, max_bytes: int) -> None:
        self.path = path
        self.mode = mode
        self.max_bytes = max_bytes

    @property
    def shown(self) -> str:
        """The path."""
        return str(self.path)

    def read(self) -> Published:
        """The file's token, or nothing when the file does not exist.

        Raises:
            SourceError: it cannot be read or is larger than ``max_bytes``.
        """
        try:
            with self.path.open("rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except FileNotFoundError:
            return Published(None)
        except OSError as exc:
            raise SourceError(f"reading {self.path}: {exc.strerror or exc}") from exc
        if len(data) > self.max_bytes:
            raise SourceError(f"reading {self.path}: expected at most {self.max_bytes} bytes")
        return Published(data.decode("utf-8", errors="replace").strip())

    def write(self, token: str, published: Published) -> None:
        """Write ``token`` atomically (temp file, fsync, rename); missing parents are made.

        Raises:
            SourceError: the write failed.
        """
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(self.path, token, mode=self.mode)
        except OSError as exc:
            raise SourceError(f"writing {self.path}: {exc.strerror or exc}") from exc


class HTTPDest:
    """An http(s) destination: ``GET`` to read, conditional ``PUT`` to write."""

    def __init__(self, spec: str, *, client: HTTPClient, max_bytes: int) -> None:
        self.spec = parse_http_path(spec, what="publish destination")
        self.client = client
        self.max_bytes = max_bytes

    @property
    def shown(self) -> str:
        """The URL without user info, query or headers."""
        return safe_url(self.spec.url)

    def read(self) -> Published:
        """The published token and its ETag; nothing on 404/410.

        Raises:
            SourceError: another status, or the request failed.
        """
        resp = self.client.request(
            self.spec.url,
            headers=self.spec.headers,
            timeout=self.spec.timeout or 30.0,
            max_bytes=self.max_bytes,
            body_statuses={200},
            skip_verify=self.spec.skip_verify,
        )
        if resp.status in _ABSENT:
            return Published(None)
        if resp.status != 200:
            raise SourceError(f"GET {self.shown}: expected 200 or 404, got {resp.status}")
        text = resp.body.decode("utf-8", errors="replace").strip()
        return Published(text, resp.header("ETag"))  # "" (empty) is there, and not a token

    def write(self, token: str, published: Published) -> None:
        """``PUT`` ``token``, conditional on what was read.

        Raises:
            Conflict: ``412 Precondition Failed``.
            SourceError: another non-2xx status, or the request failed.
        """
        if published.raw is None:
            condition = [("If-None-Match", "*")]
        elif published.etag:
            condition = [("If-Match", published.etag)]
        else:
            condition = []  # a server without ETags: an unconditional write
        resp = self.client.request(
            self.spec.url,
            method="PUT",
            headers=(*self.spec.headers, ("Content-Type", "application/jwt")),
            base_headers=condition,
            body=token.encode("utf-8"),
            timeout=self.spec.timeout or 30.0,
            max_bytes=64 * 1024,
            body_statuses=(),
            skip_verify=self.spec.skip_verify,
        )
        if resp.status == 412:
            raise Conflict(f"PUT {self.shown}: 412 Precondition Failed (changed since read)")
        if not 200 <= resp.status < 300:
            raise SourceError(f"PUT {self.shown}: expected 2xx, got {resp.status}")


def destination(spec: str, *, client: HTTPClient, mode: int, max_bytes: int) -> Destination:
    """The destination for one ``dest`` entry (an http(s) URL, else a file path)."""
    if is_http(spec):
        return HTTPDest(spec, client=client, max_bytes=max_bytes)
    return FileDest(Path(spec), mode=mode, max_bytes=max_bytes)


__all__ = ["Conflict", "Destination", "FileDest", "HTTPDest", "Published", "destination"]
