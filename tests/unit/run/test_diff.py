"""Diff of old/new command lists: golden cases, properties, and diff_run running each once."""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import TESTS_DIR

from agent.run.diff import diff, has_work
from agent.run.engine import diff_run
from agent.run.model import Command, Exec, parse_commands

CASES = sorted((TESTS_DIR / "cases" / "diff").glob("*.json"))


def leaves(cmds: Sequence[Command]) -> Iterator[Command]:
    for c in cmds:
        if c.commands:
            yield from leaves(c.commands)
        else:
            yield c


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_golden_diff_case(path: Path) -> None:
    case = json.loads(path.read_text())
    old = parse_commands(case["old"], where="old")
    new = parse_commands(case["new"], where="new")
    before, after = diff(old, new)
    assert {
        "remove_before": [c.id for c in before],
        "remove_after": [c.id for c in after],
    } == case["expected"]
    # Removed commands are the OLD commands themselves (old check/remove/env).
    old_leaves = [id(c) for c in leaves(old)]
    assert all(id(c) in old_leaves for c in (*before, *after))


def test_golden_cases_exist() -> None:
    assert any(p.stem == "etcha_commands_diff" for p in CASES)


def test_etcha_case_removes_the_old_version_of_a_changed_command() -> None:
    case = json.loads((TESTS_DIR / "cases" / "diff" / "etcha_commands_diff.json").read_text())
    before, _ = diff(parse_commands(case["old"], where="o"), parse_commands(case["new"], where="n"))
    k = next(c for c in before if c.id == "k")
    assert (k.check, k.change, k.remove) == ("checkK", "changeK", "removeL")


def test_has_work_looks_into_groups() -> None:
    assert not has_work([])
    assert not has_work([Command(id="a", change="x", remove="y")])
    assert has_work([Command(id="a", check="x")])
    assert has_work([Command(id="a", always=True)])
    assert has_work(
        [Command(id="g", commands=(Command(id="h", commands=(Command(id="a", check="c"),)),))]
    )
    # A group's own fields do not count: only its leaves.
    assert not has_work([Command(id="g", always=True, commands=(Command(id="a"),))])


# -- properties ---------------------------------------------------------------------------------

IDS = st.sampled_from(["a", "b", "c", "d", "e"])


def leaf_strategy() -> st.SearchStrategy[Command]:
    return st.builds(
        Command,
        id=IDS,
        change=st.sampled_from(["", "v1", "v2"]),
        change_ignore=st.booleans(),
        check=st.sampled_from(["", "true", "false"]),
        remove=st.sampled_from(["", "rm"]),
        remove_after=st.booleans(),
        always=st.booleans(),
    )


def tree_strategy() -> st.SearchStrategy[tuple[Command, ...]]:
    return st.recursive(
        st.lists(leaf_strategy(), max_size=4).map(tuple),
        lambda children: st.lists(
            st.one_of(
                leaf_strategy(),
                st.builds(Command, id=IDS, commands=children.filter(bool)),
            ),
            max_size=4,
        ).map(tuple),
        max_leaves=12,
    )


@given(tree_strategy())
def test_diff_of_a_list_against_itself_removes_nothing(cmds: tuple[Command, ...]) -> None:
    # Repeated ids compare against the first command of that id, so use unique-id lists.
    def unique(cs: Sequence[Command]) -> bool:
        ids = [c.id for c in cs]
        return len(ids) == len(set(ids)) and all(unique(c.commands) for c in cs)

    if unique(cmds):
        assert diff(cmds, cmds) == ((), ())


@given(tree_strategy(), tree_strategy())
def test_every_removed_command_is_an_old_leaf_with_a_remove(
    old: tuple[Command, ...], new: tuple[Command, ...]
) -> None:
    snapshot_old, snapshot_new = repr(old), repr(new)
    before, after = diff(old, new)
    old_leaves = {id(c) for c in leaves(old)}
    for c in (*before, *after):
        assert id(c) in old_leaves
        assert c.remove
        assert not c.commands
    assert all(c.remove_after for c in after)
    assert not any(c.remove_after for c in before)
    assert repr(old) == snapshot_old and repr(new) == snapshot_new


@given(tree_strategy())
def test_dropping_everything_removes_every_removable_leaf(old: tuple[Command, ...]) -> None:
    before, after = diff(old, ())
    assert [id(c) for c in (*before, *after)] == [
        id(c) for c in leaves(old) if c.remove and not c.remove_after
    ] + [id(c) for c in leaves(old) if c.remove and c.remove_after]


def json_list(draw: st.DrawFn, kind: str) -> list[dict[str, Any]]:
    ids = draw(st.lists(IDS, unique=True, max_size=5))
    out = []
    for cid in ids:
        d: dict[str, Any] = {"id": cid}
        version = draw(st.sampled_from(["v1", "v2"]))
        d["change"] = f"echo change:{cid}:{version} >> $LOG"
        check = draw(st.sampled_from(["", "true", "false"]))
        if check:
            d["check"] = check
        if draw(st.booleans()):
            d["remove"] = f"echo remove:{kind}:{cid} >> $LOG"
        if draw(st.booleans()):
            d["always"] = True
        if draw(st.booleans()):
            d["removeAfter"] = True
        out.append(d)
    return out


@st.composite
def old_new(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    return json_list(draw, "old"), json_list(draw, "new")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(old_new())
def test_no_command_runs_twice_in_one_diff_run(lists: tuple[list[Any], list[Any]]) -> None:
    old_json, new_json = lists
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "log"
        ex = Exec(
            allow_override=True, command="/bin/sh -c", env_inherit=False, env={"LOG": str(log)}
        )
        old = parse_commands(old_json, where="old")
        new = parse_commands(new_json, where="new")
        outcome = asyncio.run(diff_run(new, old, exec=ex, check=False, no_remove=False, source="s"))
        lines = log.read_text().splitlines() if log.exists() else []
    assert outcome.error is None
    counts = Counter(lines)
    assert all(n == 1 for n in counts.values()), counts
    # Changes come only from the new list, removals only from the old one.
    assert all(line.startswith(("change:", "remove:old:")) for line in lines)
