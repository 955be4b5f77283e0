"""``agent.core.records.Record``: repr, == and hash exactly as ``@dataclass(frozen=True)``'s."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config.tree import Config, RunConfig
from agent.core.records import Record
from agent.run.model import Command, Exec


@dataclass(frozen=True)
class Generated:
    a: Any
    secret: Any = field(default=None, repr=False)
    raw: Any = field(default=None, compare=False)
    hashed_only: Any = field(default=None, compare=False, hash=True)
    unhashed: Any = field(default=None, hash=False)


@dataclass(frozen=True, repr=False, eq=False)
class Shared(Record):
    a: Any
    secret: Any = field(default=None, repr=False)
    raw: Any = field(default=None, compare=False)
    hashed_only: Any = field(default=None, compare=False, hash=True)
    unhashed: Any = field(default=None, hash=False)


@dataclass(frozen=True, repr=False, eq=False)
class SharedChild(Shared):
    extra: int = 0


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.text(max_size=5),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _outcome(fn: Any) -> Any:
    try:
        return ("ok", fn())
    except TypeError as exc:  # unhashable values: both raise the same error
        return ("TypeError", str(exc))


@settings(max_examples=200, deadline=None)
@given(x=st.lists(VALUES, min_size=5, max_size=5), y=st.lists(VALUES, min_size=5, max_size=5))
def test_record_methods_match_the_generated_ones(x: list[Any], y: list[Any]) -> None:
    gx, gy, sx, sy = Generated(*x), Generated(*y), Shared(*x), Shared(*y)
    assert repr(sx) == repr(gx).replace("Generated(", "Shared(", 1)
    assert (sx == sy) == (gx == gy)
    assert (sx != sy) == (gx != gy)
    assert sx == Shared(*x)
    assert _outcome(lambda: hash(sx)) == _outcome(lambda: hash(gx))


def test_record_equality_needs_the_very_same_class() -> None:
    assert Shared(1) != SharedChild(1)
    assert Shared(1).__eq__(Generated(1)) is NotImplemented
    assert repr(SharedChild(1, extra=2)) == (
        "SharedChild(a=1, raw=None, hashed_only=None, unhashed=None, extra=2)"
    )


def test_record_repr_of_a_value_that_contains_itself_is_cut() -> None:
    box: list[Any] = []
    rec = Shared(box)
    box.append(rec)
    assert repr(rec) == "Shared(a=[...], raw=None, hashed_only=None, unhashed=None)"


def test_record_stays_a_frozen_dataclass() -> None:
    rec = Shared(1, secret="s")
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.a = 2  # type: ignore[misc]
    assert dataclasses.replace(rec, a=2) == Shared(2, secret="s")
    assert [f.name for f in dataclasses.fields(rec)][:2] == ["a", "secret"]


@pytest.mark.parametrize("cls", [Config, RunConfig, Command, Exec])
def test_config_and_command_classes_share_the_record_methods(cls: type) -> None:
    assert dataclasses.is_dataclass(cls)
    assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    for name in ("__repr__", "__eq__", "__hash__"):
        assert getattr(cls, name) is getattr(Record, name)
