"""A base for frozen dataclasses that shares ``__repr__``, ``__eq__`` and ``__hash__``.

``@dataclass(frozen=True)`` generates (and compiles) six methods per class when the module is
imported. The config tree alone has about twenty such classes, some with 45 fields, so their
creation is a sizeable part of every command's start-up. A class declared
``@dataclass(frozen=True, repr=False, eq=False)`` on top of :class:`Record` gets only
``__init__``, ``__setattr__`` and ``__delattr__`` generated, and inherits the three methods
below, which behave exactly as the generated ones of Python 3.11:

- ``repr``: ``QualName(a=..., b=...)`` over the fields with ``repr=True`` (``...`` when the
  value contains itself);
- ``==``: equal when ``other`` is of the very same class and the fields with ``compare=True``
  are equal, else ``NotImplemented``;
- ``hash``: the hash of the tuple of the fields with ``hash=True``, or with ``compare=True``
  when ``hash`` is unset (what ``frozen=True, eq=True`` gives).

It stays a frozen dataclass: ``dataclasses.fields``, ``replace`` and ``asdict`` work as before.
"""

from __future__ import annotations

import reprlib
from dataclasses import fields

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

__all__ = ["Record"]


class Record:
    """Base class; subclasses are ``@dataclass(frozen=True, repr=False, eq=False)``."""

    __slots__ = ()

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        shown = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self) if f.repr)  # type: ignore[arg-type]
        return f"{self.__class__.__qualname__}({shown})"

    def _compared(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self) if f.compare)  # type: ignore[arg-type]

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return self._compared() == other._compared()
        return NotImplemented

    def __hash__(self) -> int:
        hashed = (
            getattr(self, f.name)
            for f in fields(self)  # type: ignore[arg-type]
            if (f.compare if f.hash is None else f.hash)
        )
        return hash(tuple(hashed))
