"""Standard-library modules that other standard-library modules import but rarely use.

Start-up cost (issue 14). ``dataclasses`` imports ``inspect`` (with ``ast``, ``dis`` and
``tokenize``) and uses it only for a class without a docstring; ``logging`` imports
``traceback`` (with ``linecache``, ``tokenize``, ``textwrap`` and ``contextlib``) and uses it only
to format an exception or a stack. (``ipaddress``, which ``urllib.parse`` imports, is not
deferred: the render variables use it.)

:func:`defer_stdlib` puts a stand-in module into ``sys.modules`` for each of them that is not
imported yet. ``import inspect`` then binds the stand-in; the first attribute read that the
stand-in does not have (``inspect.signature``) imports the real module, copies its namespace into
the stand-in and returns the attribute, and from then on ``sys.modules`` holds the real module.
Nothing else changes: a module that is used is loaded, completely, at its first use.

Thread safety: the load goes through ``importlib.import_module`` (the import system's per-module
lock), so two threads reading a deferred module at once both get the one fully loaded module.

Only the CLI entry point calls :func:`defer_stdlib`, before its own imports.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType

#: Modules deferred by :func:`defer_stdlib` (see the module docstring for who imports them).
DEFERRED = ("inspect", "traceback", "linecache", "tokenize")


class Deferred(ModuleType):
    """A stand-in for a module not loaded yet: the first missing attribute loads it."""

    def __getattr__(self, attr: str) -> object:
        name = self.__name__
        if sys.modules.get(name) is self:
            sys.modules.pop(name, None)
        real = import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer_stdlib(names: tuple[str, ...] = DEFERRED) -> None:
    """Put a :class:`Deferred` stand-in into ``sys.modules`` for each of ``names`` not imported
    yet (a module already imported is left as it is)."""
    for name in names:
        if name not in sys.modules:
            sys.modules[name] = Deferred(name)  # its __spec__ is None until it loads
