"""The ``std.native`` functions of a render (reference §7.1), with Etcha's bugs fixed.

- :class:`Natives` holds the per-render cache: :func:`make_natives` returns a fresh one, so a
  cache never outlives the render(s) it was made for. One ``Natives`` serves one render at a time.
- The ``render`` native evaluates its text in-process with the same natives and the same import
  resolution as the evaluation that called it (the file set when sandboxed); no temp file.
- Heavy or network modules (``dns``, ``ssl``, ``http.client``) are imported lazily.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import string
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType

from agent.core.errors import RenderError, SourceError
from agent.jsonnet.engine import EvaluationFrames, evaluate, one_line
from agent.jsonnet.sysinfo import go_arch, go_os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final

    from agent.net.http import HTTPClient

__all__ = ["MAX_FETCH_BYTES", "NativeContext", "Natives", "make_natives"]

MAX_FETCH_BYTES = 16 * 1024 * 1024
"""Largest file or HTTP body ``getFile`` accepts."""

_RANDOM_ALPHABET = string.ascii_letters + string.digits


class NativeContext:
    """What the native functions of one render may see.

    A context for the natives, not config, claims or a result: a plain slotted class (its
    attributes ``Final`` for mypy), as creating a frozen dataclass costs every render about
    half a millisecond of start-up (issue 14).

    Attributes:
        config_view: returned by ``getConfig()`` (for patterns ``{exec, vars, targets}``).
        env: the ``getEnv`` environment when ``envInherit`` is false; ``None`` = process env.
        disable_external: ``-d``: HTTP ``getFile`` and ``getRecord`` fail (fallbacks still apply).
        entry_dir: returned by ``getPath()`` (absolute directory of the entry file, or ``""``).
        http_timeout: default ``getFile`` HTTP timeout and DNS lifetime, in seconds.
        tls_skip_verify: skip TLS verification for every ``getFile`` request.
        ca_file: extra CA bundle for ``getFile`` (``""`` = system CAs only).
        no_system_ca: trust only ``ca_file`` for ``getFile``, not the system store.
        follow_cross_origin: ``getFile`` follows a redirect to another origin (without the
            custom headers).
        dns_server: resolver address for ``getRecord`` (``""`` = the system resolver).
        dns_port: resolver port used with ``dns_server``.
    """

    __slots__ = (
        "ca_file",
        "config_view",
        "disable_external",
        "dns_port",
        "dns_server",
        "entry_dir",
        "env",
        "follow_cross_origin",
        "http_timeout",
        "no_system_ca",
        "tls_skip_verify",
    )

    def __init__(
        self,
        config_view: Mapping[str, Any] | None = None,
        env: Mapping[str, str] | None = None,
        disable_external: bool = False,
        entry_dir: str = "",
        http_timeout: float = 10.0,
        tls_skip_verify: bool = False,
        ca_file: str = "",
        no_system_ca: bool = False,
        follow_cross_origin: bool = False,
        dns_server: str = "",
        dns_port: int = 53,
    ) -> None:
        self.config_view: Final[Mapping[str, Any]] = (
            MappingProxyType({}) if config_view is None else config_view
        )
        self.env: Final = env
        self.disable_external: Final = disable_external
        self.entry_dir: Final = entry_dir
        self.http_timeout: Final = http_timeout
        self.tls_skip_verify: Final = tls_skip_verify
        self.ca_file: Final = ca_file
        self.no_system_ca: Final = no_system_ca
        self.follow_cross_origin: Final = follow_cross_origin
        self.dns_server: Final = dns_server
        self.dns_port: Final = dns_port


class Natives(EvaluationFrames):
    """The native functions of one render, with their private cache.

    A mapping ``name -> (parameter names, function)`` as the binding expects. Build it with
    :func:`make_natives`; it is stateful (cache, the evaluation it is serving) and must not be
    shared by concurrent renders.
    """

    def __init__(self, ctx: NativeContext) -> None:
        super().__init__()
        self.ctx = ctx
        self._cache: dict[str, Any] = {}
        self._http: HTTPClient | None = None
        self._callbacks: dict[str, tuple[tuple[str, ...], Callable[..., Any]]] = {
            "getArch": ((), go_arch),
            "getConfig": ((), self._get_config),
            "getEnv": (("key", "fallback"), self._get_env),
            "getFile": (("path", "fallback"), self._get_file),
            "getOS": ((), go_os),
            "getPath": ((), self._get_path),
            "getRecord": (("type", "name", "fallback"), self._get_record),
            "randStr": (("length",), self._rand_str),
            "regexMatch": (("regex", "string"), self._regex_match),
            "render": (("string",), self._render),
        }

    def __getitem__(self, name: str) -> tuple[tuple[str, ...], Callable[..., Any]]:
        return self._callbacks[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._callbacks)

    def __len__(self) -> int:
        return len(self._callbacks)

    # -- simple natives ----------------------------------------------------------------------

    def _get_config(self) -> Any:
        if "getConfig" not in self._cache:
            self._cache["getConfig"] = json.loads(json.dumps(_plain(self.ctx.config_view)))
        return self._cache["getConfig"]

    def _get_path(self) -> str:
        return self.ctx.entry_dir

    def _get_env(self, key: Any, fallback: Any) -> Any:
        if not isinstance(key, str):
            raise RenderError(f"getEnv: expected a string key, got {type(key).__name__}")
        source = self.ctx.env if self.ctx.env is not None else os.environ
        value = source.get(key, "")
        if value:
            return value
        if fallback is not None:
            return fallback
        raise RenderError(f"no value found for {key} and no fallback provided")

    def _rand_str(self, length: Any) -> str:
        if not isinstance(length, int | float) or isinstance(length, bool) or length < 0:
            raise RenderError(f"randStr: expected a length >= 0, got {length!r}")
        import secrets  # only for randStr

        return "".join(secrets.choice(_RANDOM_ALPHABET) for _ in range(int(length)))

    def _regex_match(self, regex: Any, value: Any) -> bool:
        if not isinstance(regex, str) or not isinstance(value, str):
            raise RenderError("regexMatch: expected (regex string, string)")
        try:
            return re.search(regex, value) is not None
        except re.error as exc:
            raise RenderError(f"regexMatch: invalid regex {regex!r}: {exc}") from None

    def _render(self, text: Any) -> Any:
        if not isinstance(text, str):
            raise RenderError(f"render: expected a string, got {type(text).__name__}")
        callback, outer = self.current_frame()
        name = posixpath.join(posixpath.dirname(outer), "<render>")
        return evaluate(text, name, callback, self)

    # -- getFile ------------------------------------------------------------------------------

    def _get_file(self, path: Any, fallback: Any) -> Any:
        if not isinstance(path, str) or not path:
            raise RenderError("getFile: expected a path or URL string")
        key = "getFile_" + path
        if key in self._cache:
            return self._cache[key]
        try:
            if path.startswith(("http://", "https://")):
                if self.ctx.disable_external:
                    raise RenderError(
                        "error calling getFile: external native functions are disabled"
                    )
                value = self._fetch(path)
            else:
                value = _read_local(path)
        except Exception as exc:
            if fallback is not None:
                return fallback
            if isinstance(exc, RenderError):
                raise
            raise RenderError(f"getFile {_redact(path)}: {one_line(str(exc))}") from None
        value = value.strip()
        self._cache[key] = value
        return value

    def _client(self) -> HTTPClient:
        """The render's one HTTP client, made on the first http ``getFile``."""
        if self._http is None:
            from agent.net.http import HTTPClient  # lazy: only for an http getFile
            from agent.net.tls import TLSOptions  # lazy: with the HTTP client

            ctx = self.ctx
            self._http = HTTPClient(
                TLSOptions(
                    skip_verify=ctx.tls_skip_verify,
                    ca_file=ctx.ca_file,
                    no_system_ca=ctx.no_system_ca,
                ),
                follow_cross_origin=ctx.follow_cross_origin,
            )
        return self._http

    def _fetch(self, spec: str) -> str:
        # The one HTTP client (agent.net.http): httpClient.caFile, noSystemCA, tlsSkipVerify,
        # TLS 1.2 minimum, the same-origin redirect policy and the one #Header: parser.
        from agent.net.urls import parse_http_path  # lazy: URL parsing, only for an http getFile

        try:
            parsed = parse_http_path(spec, what="getFile")
        except SourceError as exc:
            raise RenderError(str(exc)) from None
        timeout = parsed.timeout if parsed.timeout is not None else self.ctx.http_timeout
        try:
            resp = self._client().request(
                parsed.url,
                headers=parsed.headers,
                timeout=timeout,
                max_bytes=MAX_FETCH_BYTES,
                body_statuses=(200,),
                skip_verify=parsed.skip_verify,
            )
        except SourceError as exc:
            raise RenderError(f"getFile {_redact(spec)}: {exc}") from None
        if resp.status != 200:
            raise RenderError(f"getFile {_redact(spec)}: bad response from server: {resp.status}")
        return resp.body.decode("utf-8", "replace")

    # -- getRecord ----------------------------------------------------------------------------

    def _get_record(self, rtype: Any, name: Any, fallback: Any) -> Any:
        if not isinstance(rtype, str) or not isinstance(name, str):
            raise RenderError("getRecord: expected (type string, name string, fallback)")
        try:
            if self.ctx.disable_external:
                raise RenderError("error calling getRecord: external native functions are disabled")
            kind = rtype.lower()
            key = f"getRecord_{kind}_{name}"
            if key not in self._cache:
                self._cache[key] = sorted(self._lookup(kind, name))
            return list(self._cache[key])
        except Exception as exc:
            if fallback is not None:
                return fallback
            if isinstance(exc, RenderError):
                raise
            raise RenderError(
                f"getRecord {rtype} {name}: error resolving record: {one_line(str(exc))}"
            ) from None

    def _lookup(self, kind: str, name: str) -> list[str]:
        if kind not in ("a", "aaaa", "cname", "txt"):
            raise RenderError(f"getRecord: expected type a, aaaa, cname or txt, got {kind}")
        if kind in ("a", "aaaa") and not self.ctx.dns_server:
            return _lookup_host(name, ipv6=kind == "aaaa")
        import dns.resolver

        resolver = dns.resolver.Resolver(configure=not self.ctx.dns_server)
        if self.ctx.dns_server:
            resolver.nameservers = [self.ctx.dns_server]
            resolver.port = self.ctx.dns_port
        resolver.lifetime = self.ctx.http_timeout
        if kind == "cname":
            answer = resolver.resolve(name, "A", raise_on_no_answer=False)
            return [answer.canonical_name.to_text()]
        rdtype = {"a": "A", "aaaa": "AAAA", "txt": "TXT"}[kind]
        answer = resolver.resolve(name, rdtype, raise_on_no_answer=False)
        if answer.rrset is None:
            return []
        if kind == "txt":
            return [b"".join(r.strings).decode("utf-8", "replace") for r in answer.rrset]
        return [r.address for r in answer.rrset]


def make_natives(ctx: NativeContext) -> Natives:
    """Build the native functions for one render, with a fresh cache.

    Args:
        ctx: what the functions may see.

    Returns:
        A :class:`Natives` mapping to pass to :func:`render_files` or :func:`evaluate_text`.
    """
    return Natives(ctx)


def _lookup_host(name: str, *, ipv6: bool) -> list[str]:
    """Go ``net.LookupHost`` semantics: the system resolver (hosts file, then DNS), filtered."""
    import socket

    infos = socket.getaddrinfo(name, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    family = socket.AF_INET6 if ipv6 else socket.AF_INET
    return sorted({str(i[4][0]).split("%", 1)[0] for i in infos if i[0] == family})


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _read_local(path: str) -> str:
    if path.startswith("file://"):
        path = path[len("file://") :]
    elif path.startswith("file:"):
        path = path[len("file:") :]
    try:
        with open(os.path.expanduser(path), "rb") as fh:
            data = fh.read(MAX_FETCH_BYTES + 1)
    except OSError as exc:
        raise RenderError(
            f"getFile {path}: expected a readable file, got {exc.strerror or exc}"
        ) from None
    if len(data) > MAX_FETCH_BYTES:
        raise RenderError(f"getFile {path}: expected at most {MAX_FETCH_BYTES} bytes, got more")
    return data.decode("utf-8", "replace")


def _redact(spec: str) -> str:
    """A URL without headers, credentials or query, safe for messages."""
    from urllib.parse import urlsplit

    url = spec.partition("#")[0]
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    host = parts.hostname or ""
    try:
        if parts.port is not None:
            host = f"{host}:{parts.port}"
    except ValueError:
        return "<invalid URL>"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else url
