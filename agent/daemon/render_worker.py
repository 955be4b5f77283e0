"""The daemon's renderer: a forked worker that lives while renders keep coming (issue 14).

A one-shot child per render (:func:`agent.daemon.render_child.render_in_child`) pays a fork and
a start of the Jsonnet engine's Go runtime for every push. :class:`Renderer` keeps ONE forked
worker for a burst of renders instead: it renders one admitted token at a time and ends on its
own after :data:`WORKER_IDLE` seconds without a request, so an idle daemon holds no engine and no
worker, and a burst of pushes pays one fork and one engine start-up.

- The worker is forked from the daemon (which never loads the engine), with the config in force:
  a new config (SIGHUP) gets a new worker. It inherits the environment, the working directory
  and every module, so the natives behave as in-process. It calls
  :func:`agent.pattern.load.render_token` (the one implementation of rendering) on a copy of the
  :class:`~agent.trust.gate.AdmittedToken` the daemon sends it (pickled; only the daemon writes
  to the worker, and the worker answers in JSON, so nothing the worker sends is unpickled).
- A render that arrives while the worker is busy gets a one-shot child (no render waits for
  another source's slow ``getFile``).
- Bounds as for one-shot children (:class:`~agent.daemon.render_child.RenderLimits`): a render
  past its timeout, or an answer over the size limit, kills the worker and fails; a worker that
  dies under a render fails it with a clear error; the next render forks a new worker.
- The worker decides to end only while no request is waiting, with a distinct exit status: a
  request that raced with that exit was never read, and is sent again to a new worker. Nothing
  is rendered twice otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import pickle
import select
import signal
from collections.abc import Callable
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from agent.core.errors import RenderError
from agent.daemon.render_child import (
    RenderLimits,
    call_in_child,
    decode_result,
    encode_result,
    engine_loaded,
    fork_child,
)
from agent.pattern.load import LoadedPattern, finish_token, load_from_token, render_token

if TYPE_CHECKING:
    from agent.config.schema import Config
    from agent.trust.gate import AdmittedToken

__all__ = ["WORKER_IDLE", "Handler", "Renderer"]

#: What the worker runs per request: ``handler(config, request)`` -> a JSON value.
Handler = Callable[["Config", Any], Any]

#: Seconds an idle worker waits for the next render before it ends.
WORKER_IDLE = 1.0
#: The worker's exit status when it ended idle (it read no request).
_IDLE_EXIT = 3
_HEADER = 8
_READ_CHUNK = 1024 * 1024


class _IdleExit(Exception):
    """The worker had ended idle: the request was never read (send it to a new worker)."""


class _TooBig(Exception):
    """The worker announced an answer over the size limit."""


class Renderer:
    """Renders admitted tokens for the daemon outside its process (see the module doc).

    Args:
        limits: the bounds of one render.
        idle: seconds an idle worker lingers.
    """

    def __init__(
        self,
        limits: RenderLimits | None = None,
        *,
        idle: float = WORKER_IDLE,
        handler: Handler | None = None,
    ) -> None:
        self.limits = limits or RenderLimits()
        self.idle = idle
        self._handler: Handler = handler or _render_request
        self._worker: _Worker | None = None
        self._busy = False

    @property
    def worker_pid(self) -> int | None:
        """The worker's pid while one runs (tests, diagnostics)."""
        w = self._worker
        return w.pid if w is not None and w.status is None else None

    async def render(
        self, admitted: AdmittedToken, *, config: Config, source: str, disable_external: bool
    ) -> LoadedPattern:
        """:func:`~agent.pattern.load.load_from_token`, rendered outside the daemon.

        When the engine is loaded in this process already (a Jsonnet config file), a fork is
        unsafe: the token renders in a worker thread (:func:`render_child.engine_loaded`).

        Raises:
            PatternError: the token carries no pattern, or it is not a valid Pattern.
            RenderError: the Jsonnet did not render, or the render process failed.
        """
        if engine_loaded():
            return await asyncio.to_thread(
                load_from_token,
                admitted,
                config=config,
                source=source,
                disable_external=disable_external,
            )
        request = (admitted, source, disable_external)
        data = await self.call(config, request, what=f"source {source}")
        return finish_token(data, admitted, config=config, source=source)

    async def call(self, config: Config, request: Any, *, what: str) -> Any:
        """The handler's value for ``request`` (rendering: its rendered JSON), from the worker,
        or from a one-shot child while the worker is busy.

        Raises:
            AgentError: the handler's error (same class, message and attributes).
            RenderError: the render process timed out, answered too much or died.
        """
        try:
            body = _dumps(request)
        except (pickle.PicklingError, TypeError, AttributeError):
            body = None  # not expected: the one-shot child needs no copy of the request
        if self._busy or body is None:
            fn = functools.partial(self._handler, config, request)
            return await call_in_child(fn, limits=self.limits, what=what)
        self._busy = True
        try:
            return await self._call(config, body, what=what)
        finally:
            self._busy = False

    async def _call(self, config: Config, body: bytes, *, what: str) -> Any:
        for _ in range(2):
            worker = self._worker
            if worker is not None and (worker.config is not config or worker.status is not None):
                worker.close()
                worker = None
            if worker is None:
                worker = self._worker = _Worker.start(config, self.idle, self._handler, what)
            try:
                return await worker.call(body, self.limits, what)
            except _IdleExit:
                self._worker = None
            except BaseException:
                if not worker.answered:  # timed out, too large, died, cancelled: not reusable
                    self._worker = None
                    worker.close()
                raise
        raise RenderError(  # pragma: no cover (a new worker does not end idle at once)
            f"error rendering pattern for {what}: expected the render process to read the "
            "request, got two that ended before"
        )

    def close(self) -> None:
        """End the worker (the daemon stops)."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def _proxy(items: dict[str, Any]) -> MappingProxyType[str, Any]:
    return MappingProxyType(items)


class _Pickler(pickle.Pickler):
    """Pickles the token's read-only mappings as plain dicts, re-wrapped on load."""

    def reducer_override(self, obj: Any) -> Any:
        if type(obj) is MappingProxyType:
            return _proxy, (dict(obj),)
        return NotImplemented


def _dumps(request: Any) -> bytes:
    buf = io.BytesIO()
    _Pickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(request)
    return buf.getvalue()


class _Worker:
    """The daemon's side of one worker: its request and answer pipes and its exit."""

    def __init__(self, pid: int, req_w: int, resp_r: int, config: Config) -> None:
        self.pid, self.req_w, self.resp_r, self.config = pid, req_w, resp_r, config
        self.loop = asyncio.get_running_loop()
        self.status: int | None = None
        #: Whether the last request got its whole answer (else the worker is not reusable).
        self.answered = True
        self._exited: asyncio.Future[None] = self.loop.create_future()
        os.set_blocking(req_w, False)
        os.set_blocking(resp_r, False)
        try:
            self._pidfd = os.pidfd_open(pid)
        except OSError:  # pragma: no cover (Linux < 5.3)
            self._pidfd = -1
        else:
            self.loop.add_reader(self._pidfd, self._reap)

    @classmethod
    def start(cls, config: Config, idle: float, handler: Handler, what: str) -> _Worker:
        req_r, req_w = os.pipe()
        resp_r, resp_w = os.pipe()
        try:
            pid = fork_child(
                lambda: _serve(config, req_r, resp_w, idle, handler),
                keep=(req_r, resp_w),
                collect=True,
                what=what,
            )
        except RenderError:
            os.close(req_w)
            os.close(resp_r)
            raise
        finally:
            os.close(req_r)
            os.close(resp_w)
        return cls(pid, req_w, resp_r, config)

    def _reap(self) -> None:
        """The worker exited (pidfd readable), or a check whether it did."""
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pid, status = self.pid, -1
        if pid == 0:
            return
        self.status = os.waitstatus_to_exitcode(status) if status != -1 else -1
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(None)

    async def _wait_exit(self) -> None:
        while self.status is None:
            if self._pidfd >= 0:
                await asyncio.shield(self._exited)
            else:  # pragma: no cover (no pidfd)
                await asyncio.sleep(0.005)
                self._reap()

    async def call(self, body: bytes, limits: RenderLimits, what: str) -> Any:
        """Send one request, return its value (or raise its error).

        Raises:
            _IdleExit: the worker had ended idle; the request was not read.
            AgentError: the render's error; RenderError for a timeout, an answer too large, a
                worker that died.
        """
        self.answered = False
        try:
            payload = await asyncio.wait_for(self._exchange(body, limits.max_bytes), limits.timeout)
        except TimeoutError:
            raise RenderError(
                f"error rendering pattern for {what}: expected the render to finish within "
                f"{limits.timeout:g}s, got no result (the render process was killed)"
            ) from None
        except _TooBig:
            raise RenderError(
                f"error rendering pattern for {what}: expected a result of at most "
                f"{limits.max_bytes} bytes, got more (the render process was killed)"
            ) from None
        if payload is None:
            await self._wait_exit()
            if self.status == _IDLE_EXIT:
                raise _IdleExit
            return decode_result(b"", self.status, what=what)
        self.answered = True
        return decode_result(payload, self.status, what=what)

    async def _exchange(self, body: bytes, max_bytes: int) -> bytes | None:
        """Write the request, read the answer (``None``: the worker ended first).

        Raises:
            _TooBig: the answer is announced over ``max_bytes``.
        """
        if not await self._send(len(body).to_bytes(_HEADER, "big") + body):
            return None
        return await self._receive(max_bytes)

    async def _send(self, data: bytes) -> bool:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.req_w, view) :]
            except BlockingIOError:
                await self._ready(self.loop.add_writer, self.loop.remove_writer, self.req_w)
            except OSError:  # EPIPE: the worker is gone
                return False
        return True

    async def _receive(self, max_bytes: int) -> bytes | None:
        buf = bytearray()
        need = _HEADER
        while len(buf) < need:
            try:
                chunk = os.read(self.resp_r, _READ_CHUNK)
            except BlockingIOError:
                await self._ready(self.loop.add_reader, self.loop.remove_reader, self.resp_r)
                continue
            if not chunk:
                return None
            buf += chunk
            if need == _HEADER and len(buf) >= _HEADER:
                size = int.from_bytes(buf[:_HEADER], "big")
                if size > max_bytes:
                    raise _TooBig
                need = _HEADER + size
        return bytes(buf[_HEADER:need])

    async def _ready(self, add: Any, remove: Any, fd: int) -> None:
        fut: asyncio.Future[None] = self.loop.create_future()

        def ready() -> None:
            if not fut.done():
                fut.set_result(None)

        add(fd, ready)
        try:
            await fut
        finally:
            remove(fd)

    def _close_pipes(self) -> None:
        for fd in (self.req_w, self.resp_r):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.req_w = self.resp_r = -1

    def close(self) -> None:
        """Kill the worker (a failed render, a new config, the daemon stops) and reap it."""
        self._close_pipes()
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.status = -signal.SIGKILL
        if self._pidfd >= 0:
            self.loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1


def _serve(config: Config, req_fd: int, resp_fd: int, idle: float, handler: Handler) -> int:
    """The worker: answer requests until ``idle`` seconds pass without one (or EOF)."""
    poller = select.poll()
    poller.register(req_fd, select.POLLIN)
    while True:
        if not poller.poll(int(idle * 1000)):
            return _IDLE_EXIT
        header = _read_exact(req_fd, _HEADER)
        if header is None:
            return 0  # the daemon closed the pipe (or is gone)
        body = _read_exact(req_fd, int.from_bytes(header, "big"))
        if body is None:
            return 0
        payload = encode_result(functools.partial(_handle, handler, config, body))
        _write_all(resp_fd, len(payload).to_bytes(_HEADER, "big") + payload)


def _handle(handler: Handler, config: Config, body: bytes) -> Any:
    # Only the daemon (this worker's parent) writes to the request pipe; the worker's answers,
    # which the daemon reads, are JSON.
    return handler(config, pickle.loads(body))  # noqa: S301


def _render_request(config: Config, request: tuple[AdmittedToken, str, bool]) -> Any:
    """The default handler: :func:`~agent.pattern.load.render_token` (the CLI's renderer)."""
    admitted, source, disable_external = request
    return render_token(admitted, config=config, source=source, disable_external=disable_external)


def _read_exact(fd: int, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, min(n - len(buf), _READ_CHUNK))
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
