"""Standard-library modules that other standard-library modules import but rarely use.

Start-up cost (issue 14). ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and
``tokenize``) and uses it only for a class without a docstring; ``logging`` imports
``traceback`` (with ``linecache``, ``tokenize``, ``textwrap`` and ``contextlib``) and uses it only
to format an exception or a stack; ``http.client``'s ``email`` imports ``random`` and
``datetime``, and ``socket`` imports ``selectors``, for functions a push never calls.
:data:`DEFERRED` lists them, each with who imports it. (``ipaddress``, which ``urllib.parse``
imports, is not deferred: the render variables use it.)

:func:`defer_stdlib` puts a stand-in module into ``sys.modules`` for each of them that is not
imported yet. ``import inspect`` then binds the stand-in; the first attribute read that the
stand-in does not have (``inspect.signature``) imports the real module, copies its namespace into
the stand-in and returns the attribute, and from then on ``sys.modules`` holds the real module.
Nothing else changes: a module that is used is loaded, completely, at its first use.

Thread safety: the load holds the stand-in's lock (and ``importlib.import_module`` the import
system's per-module lock), so two threads reading a deferred module at once both get the one
fully loaded module, after its :func:`when_loaded` hook ran. (A thread that runs a new
``import`` statement once the real module is in ``sys.modules`` gets it directly: the CLI's
threads start after the modules that log are loaded.)

Only the CLI entry point calls :func:`defer_stdlib`, before its own imports. Short-lived verbs
keep the stand-ins; ``agent run`` loads every deferred module at its start
(:func:`load_deferred`), so a daemon that runs for months holds only real modules.
"""

from __future__ import annotations

import sys
from _thread import RLock
from collections.abc import Callable
from importlib import import_module
from types import ModuleType

#: Modules deferred by :func:`defer_stdlib`: imported (``import X``) by modules on the CLI's
#: paths, used by them only inside functions that ``render``, ``push`` or ``local`` of plain
#: commands never call. Top-level modules only (a deferred submodule would not be bound as an
#: attribute of its package).
DEFERRED = (
    "logging",  # every module (its loggers); agent.core.logs.setup waits for its first use
    "inspect",  # dataclasses (a class without a docstring), with ast and dis
    "traceback",  # logging (formatting an exception), with linecache, tokenize, textwrap
    "linecache",
    "tokenize",
    "textwrap",
    "contextlib",  # traceback
    "random",  # email.utils (make_msgid) for http.client, with bisect
    "bisect",
    "datetime",  # email.utils (dates), with calendar
    "calendar",
    "stringprep",  # encodings.idna (non-ASCII names only)
    "selectors",  # socket (sendfile), with select
    "select",
    "fnmatch",  # pathlib (match, glob), with ntpath (Windows paths)
    "ntpath",
    "shlex",  # agent.run.selfexec (quoting a path)
    "struct",  # base64 (Ascii85/Base85)
    "array",  # socket (passing descriptors)
    "base64",  # ssl (DER-to-PEM)
)


#: Where :func:`when_loaded` keeps its hook, in the stand-in's namespace (with the stand-in's
#: lock and, once loaded, the real module).
ON_LOAD = "_agent_deferred_on_load"
_LOCK = "_agent_deferred_lock"
_REAL = "_agent_deferred_real"


class Deferred(ModuleType):
    """A stand-in for a module not loaded yet: the first missing attribute loads it."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.__dict__[_LOCK] = RLock()

    def load(self) -> ModuleType:
        """The real module, loaded once. Its :func:`when_loaded` hook has run when this returns,
        in whichever thread loads it; the namespace is copied into the stand-in after the hook,
        so until then every read through the stand-in waits here."""
        with self.__dict__[_LOCK]:
            real: ModuleType | None = self.__dict__.get(_REAL)
            if real is None:
                name = self.__name__
                if sys.modules.get(name) is self:
                    sys.modules.pop(name, None)
                real = import_module(name)
                self.__dict__[_REAL] = real  # (the hook may read the stand-in: this thread)
                hook = self.__dict__.pop(ON_LOAD, None)
                if hook is not None:
                    hook()
                self.__dict__.update(real.__dict__)
            return real

    def __getattr__(self, attr: str) -> object:
        return getattr(self.load(), attr)


def when_loaded(name: str, hook: Callable[[], None]) -> bool:
    """Run ``hook`` right after the deferred module ``name`` loads (the last hook set wins).

    Returns:
        False when ``name`` is not deferred (loaded, or never deferred): the caller runs it now.
    """
    stand_in = sys.modules.get(name)
    if not isinstance(stand_in, Deferred):
        return False
    stand_in.__dict__[ON_LOAD] = hook
    return True


def defer_stdlib(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a :class:`Deferred` stand-in into ``sys.modules`` for each of ``names`` not imported
    yet (a module already imported is left as it is)."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = Deferred(name)  # its __spec__ is None until it loads


def load_deferred(names: tuple[str, ...] = DEFERRED) -> None:
    """Load every module of ``names`` that is still a stand-in: afterwards ``sys.modules`` holds
    the real modules (and each stand-in already bound somewhere reads through to its module)."""
    for name in names:
        stand_in = sys.modules.get(name)
        if isinstance(stand_in, Deferred):
            stand_in.load()
