"""Render in a forked child process, so `agent run` never loads the Jsonnet engine.

The Jsonnet engine (``_gojsonnet``: a Go runtime, ~10 MiB resident) would stay loaded for the
daemon's whole life after its first render. The daemon's renderer
(:class:`agent.daemon.render_worker.Renderer`) renders in forked processes instead: a worker that
serves a burst of renders, and one-shot children (:func:`call_in_child`) while it is busy. Both
call :func:`agent.pattern.load.render_token` (the one implementation of rendering, the same the
CLI verbs call in-process) and send the rendered value, or the error, back as JSON
(:func:`encode_result`, :func:`decode_result`); the daemon builds the Pattern from the value with
:func:`agent.pattern.load.finish_token`, as :func:`~agent.pattern.load.load_from_token` does.
This module holds the fork itself (:func:`fork_child`, :func:`detach`) and the one-shot child.

Why a fork (not a spawned interpreter): the child inherits the config, the environment
(``getEnv``), the working directory and every module already imported, so the natives behave
exactly as in-process and no state has to be serialised; a spawn would cost a whole interpreter
start-up (~100 ms of CPU) per render.

Fork safety:

- The fork happens on the event-loop thread. The daemon's other threads are the default
  executor's workers (state writes, pull fetches) and asyncio's child watchers; the child never
  touches what they own. Locks that matter are re-initialised at fork by CPython (the import
  lock, ``logging``'s handler locks) and glibc (malloc). The render timeout is the backstop for
  anything else (e.g. a lock a worker held in OpenSSL while the child's ``getFile`` needs it).
- The Go runtime does not survive a fork (its threads are lost; the child hangs). The daemon
  does not load it unless its config file is Jsonnet (read with the engine at start-up and at
  SIGHUP); then the renders stay in a worker thread (:func:`engine_loaded`): forking would be
  unsafe and would save no memory.
- SIGTERM/SIGINT/SIGHUP are blocked across the fork; the child resets them to their default
  action and detaches the event loop's wake-up fd before unblocking them, so a signal sent to
  the child can never be taken for one sent to the daemon.
- The child closes every inherited fd but stdio and its pipes (a copy of the daemon's pipes
  and sockets must not delay an EOF the daemon waits for), keeps the garbage collector off the
  inherited heap (a collection would touch, and copy, every page of it: a one-shot child
  disables it, the worker freezes the inherited objects) and leaves with ``os._exit`` (no
  ``atexit``, no flushing of inherited buffers).

Bounds: the render has :data:`RENDER_TIMEOUT` seconds (then the child is killed with SIGKILL),
its output :data:`MAX_RENDER_BYTES`; a child that dies without a result is a clear
:class:`~agent.core.errors.RenderError`. Errors cross the pipe as their class (an
:class:`~agent.core.errors.AgentError` subclass from an ``agent.*`` module), message and plain
attributes (``hint``, ``reason``), so the daemon reports exactly what an in-process render would.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import os
import signal
import sys
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agent.core.errors import AgentError, RenderError

if TYPE_CHECKING:
    pass

__all__ = [
    "MAX_RENDER_BYTES",
    "RENDER_TIMEOUT",
    "RenderLimits",
    "call_in_child",
    "decode_result",
    "detach",
    "encode_result",
    "engine_loaded",
    "fork_child",
]

#: Seconds a render may take in its child before the child is killed.
RENDER_TIMEOUT = 120.0
#: Largest rendered value (as JSON) a child may send back.
MAX_RENDER_BYTES = 64 * 1024 * 1024

#: Signals blocked across the fork (the daemon handles them; the child takes their default).
_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
#: The Jsonnet engine's extension module (it starts a Go runtime when imported).
_ENGINE = "_gojsonnet"
#: Exit status of a child that could not even report its failure.
_CHILD_FAILED = 70
_READ_CHUNK = 1024 * 1024


@dataclass(frozen=True, slots=True)
class RenderLimits:
    """Bounds of one render in a child.

    Attributes:
        timeout: seconds until the child is killed and the render fails.
        max_bytes: largest result (JSON bytes) accepted from the child.
    """

    timeout: float = RENDER_TIMEOUT
    max_bytes: int = MAX_RENDER_BYTES


def engine_loaded() -> bool:
    """Whether this process has loaded the Jsonnet engine (e.g. to read a Jsonnet config file).

    Then a fork is unsafe (the Go runtime's threads do not survive it: the child would hang)
    and would save nothing: the daemon's renderer renders in a worker thread instead.
    """
    return _ENGINE in sys.modules


async def call_in_child(fn: Callable[[], Any], *, limits: RenderLimits, what: str) -> Any:
    """Run ``fn`` in a forked child and return its JSON value, or raise its AgentError.

    Must be called on the event loop's thread. ``what`` names the render in error messages.

    Raises:
        AgentError: what ``fn`` raised (same class, message and attributes).
        RenderError: the child timed out, sent more than ``limits.max_bytes`` or died without
            a result.
    """
    loop = asyncio.get_running_loop()
    read_fd, write_fd = os.pipe()
    try:
        pid = fork_child(
            lambda: _write_result(fn, write_fd), keep=(write_fd,), collect=False, what=what
        )
    except RenderError:
        os.close(read_fd)
        raise
    finally:
        os.close(write_fd)
    child = _Child(pid, read_fd, loop, limits.max_bytes)
    try:
        try:
            payload = await asyncio.wait_for(child.result(), limits.timeout)
        except TimeoutError:
            raise RenderError(
                f"error rendering pattern for {what}: expected the render to finish within "
                f"{limits.timeout:g}s, got no result (the render process was killed)"
            ) from None
    finally:
        child.close()
    if child.too_big:
        raise RenderError(
            f"error rendering pattern for {what}: expected a result of at most "
            f"{limits.max_bytes} bytes, got more (the render process was killed)"
        )
    return decode_result(payload, child.status, what=what)


class _Child:
    """The parent's side of one render child: its result pipe and its exit status."""

    def __init__(self, pid: int, fd: int, loop: asyncio.AbstractEventLoop, max_bytes: int) -> None:
        self.pid, self.fd, self.loop, self.max_bytes = pid, fd, loop, max_bytes
        self.buf = bytearray()
        self.too_big = False
        self.status: int | None = None
        self._eof: asyncio.Future[None] = loop.create_future()
        os.set_blocking(fd, False)
        loop.add_reader(fd, self._on_read)

    def _on_read(self) -> None:
        try:
            data = os.read(self.fd, _READ_CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data and len(self.buf) + len(data) <= self.max_bytes:
            self.buf += data
            return
        self.too_big = bool(data)
        self._stop_reading()

    def _stop_reading(self) -> None:
        if self.fd >= 0:
            self.loop.remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self._eof.done():
            self._eof.set_result(None)

    async def result(self) -> bytes:
        """The child's output once it closed the pipe (or overflowed it), after it exited."""
        await asyncio.shield(self._eof)
        if self.too_big:
            self._kill()
        await self._wait_exit()
        return bytes(self.buf)

    async def _wait_exit(self) -> None:
        """Wait for the child's exit without blocking the loop (a pidfd, else short polls)."""
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            pidfd = -1
        try:
            if pidfd >= 0:
                exited: asyncio.Future[None] = self.loop.create_future()

                def on_exit() -> None:
                    if not exited.done():
                        exited.set_result(None)

                self.loop.add_reader(pidfd, on_exit)
                try:
                    if not self._reap(block=False):
                        await exited
                finally:
                    self.loop.remove_reader(pidfd)
            delay = 0.001
            while not self._reap(block=False):
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.05)
        finally:
            if pidfd >= 0:
                os.close(pidfd)

    def _reap(self, *, block: bool) -> bool:
        if self.status is not None:
            return True
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            self.status = -1
            return True
        if pid == 0:
            return False
        self.status = os.waitstatus_to_exitcode(status)
        return True

    def _kill(self) -> None:
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def close(self) -> None:
        """Stop reading; kill and reap a child still running (timeout, cancellation)."""
        self._stop_reading()
        if self.status is None:
            self._kill()
            self._reap(block=True)


def decode_result(payload: bytes, status: int | None, *, what: str) -> Any:
    """The value the child sent, or the error it reported (raised)."""
    try:
        doc = json.loads(payload) if payload else None
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or not ("value" in doc or "error" in doc):
        raise RenderError(
            f"error rendering pattern for {what}: expected a result from the render process, "
            f"got none (it {_ended(status)})"
        )
    if "error" in doc:
        raise _error(doc["error"], what=what)
    return doc["value"]


def _ended(status: int | None) -> str:
    if status is None or status == -1:
        return "ended"
    if status < 0:
        return f"was killed by signal {-status}"
    return f"exited with status {status}"


def _error(info: Any, *, what: str) -> AgentError:
    """Rebuild the AgentError the child reported (its class, message and plain attributes)."""
    if not isinstance(info, dict):
        info = {}
    message = str(info.get("message", ""))
    cls = _error_class(str(info.get("module", "")), str(info.get("type", "")))
    if cls is None:
        return RenderError(f"error rendering pattern for {what}: {message}")
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    attrs = info.get("attrs")
    exc.__dict__.update(attrs if isinstance(attrs, dict) else {})
    exc.message = message
    return exc


def _error_class(module: str, name: str) -> type[AgentError] | None:
    """An AgentError subclass of the agent by module and name (``None``: not one)."""
    if module != "agent" and not module.startswith("agent."):
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except ImportError:
        return None
    cls = getattr(mod, name, None)
    return cls if isinstance(cls, type) and issubclass(cls, AgentError) else None


def encode_result(fn: Callable[[], Any]) -> bytes:
    """Run ``fn``; its value or its error as one JSON document."""
    try:
        return json.dumps({"value": fn()}).encode("utf-8")
    except AgentError as exc:
        attrs = {
            k: v
            for k, v in vars(exc).items()
            if k != "message" and (v is None or isinstance(v, str | int | float | bool))
        }
        cls = type(exc)
        error = {
            "module": cls.__module__,
            "type": cls.__qualname__,
            "message": exc.message,
            "attrs": attrs,
        }
    except Exception as exc:  # a bug, not a user error: still one clear line
        error = {
            "module": "",
            "type": "",
            "message": f"the render process failed: {type(exc).__name__}: {exc}",
        }
    return json.dumps({"error": error}).encode("utf-8")


def _max_fd() -> int:
    try:
        return int(os.sysconf("SC_OPEN_MAX"))
    except (OSError, ValueError):
        return 65536


def detach(keep: Iterable[int], mask: Iterable[int], *, collect: bool) -> None:
    """In a freshly forked child: close every fd but stdio and ``keep``, take the default action
    for the daemon's signals (then restore the signal ``mask``) and stop the garbage collector
    from touching the inherited heap (``collect``: freeze it and keep collecting new objects;
    else disable collection, for a child that lives for one render)."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, _max_fd())
    if collect:
        gc.freeze()
    else:
        gc.disable()
    with contextlib.suppress(ValueError):  # only the main thread may; ours is, in the daemon
        signal.set_wakeup_fd(-1)
        for sig in _SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def fork_child(body: Callable[[], int], *, keep: Iterable[int], collect: bool, what: str) -> int:
    """Fork with the daemon's signals blocked; the child :func:`detach`\\ es, runs ``body`` and
    leaves with ``os._exit`` (its status: what ``body`` returned; 70 if it raised).

    Returns:
        The child's pid (in the parent).

    Raises:
        RenderError: the fork failed.
    """
    keep = tuple(keep)
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    try:
        with warnings.catch_warnings():
            # Python >= 3.12 warns about forking a process with threads; this fork is safe by
            # design (see the module doc), and a warning turned into an error would lose the pid.
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover (the child leaves with os._exit; coverage cannot see it)
            code = _CHILD_FAILED
            try:
                detach(keep, old_mask, collect=collect)
                code = body()
            finally:
                os._exit(code)
    except OSError as exc:
        raise RenderError(
            f"error rendering pattern for {what}: expected to start a render process, got {exc}"
        ) from exc
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return pid


def _write_result(fn: Callable[[], Any], write_fd: int) -> int:
    """The one-shot child's body: render, write the result, exit 0."""
    payload = encode_result(fn)
    with os.fdopen(write_fd, "wb", closefd=True) as out:
        out.write(payload)
    return 0
