"""``agent.core.deferred``: a deferred standard-library module loads, whole, at its first use.

Each test runs in a fresh interpreter (this one has every module loaded already).
"""

from __future__ import annotations

from pathlib import Path

from support import run_python


def _run(code: str) -> str:
    res = run_python(code)
    assert res.returncode == 0, res.stdout + res.stderr
    return res.stdout.strip()


def test_a_deferred_module_loads_at_its_first_attribute_read() -> None:
    out = _run(
        "import sys\n"
        "from agent.core.deferred import Deferred, defer_stdlib\n"
        "defer_stdlib(('colorsys',))\n"
        "import colorsys\n"
        "print(isinstance(colorsys, Deferred), colorsys.__spec__ is None)\n"
        "print(colorsys.rgb_to_hsv(1.0, 0.0, 0.0))\n"
        "real = sys.modules['colorsys']\n"
        "print(isinstance(real, Deferred), real.rgb_to_hsv is colorsys.rgb_to_hsv)\n"
        "print(real.__spec__.name, colorsys.__file__ == real.__file__)\n"
        "import colorsys as again\n"
        "print(again is real)\n"
    )
    assert out.splitlines() == [
        "True True",
        "(0.0, 1.0, 1.0)",
        "False True",
        "colorsys True",
        "True",
    ]


def test_a_missing_attribute_of_a_deferred_module_is_an_attribute_error() -> None:
    out = _run(
        "from agent.core.deferred import defer_stdlib\n"
        "defer_stdlib(('colorsys',))\n"
        "import colorsys\n"
        "try:\n"
        "    colorsys.no_such_name\n"
        "except AttributeError as exc:\n"
        "    print(type(exc).__name__, 'no_such_name' in str(exc))\n"
        "print(hasattr(colorsys, 'hls_to_rgb'))\n"
    )
    assert out.splitlines() == ["AttributeError True", "True"]


def test_a_module_already_imported_is_not_deferred() -> None:
    out = _run(
        "import sys, colorsys\n"
        "from agent.core.deferred import defer_stdlib\n"
        "defer_stdlib(('colorsys',))\n"
        "print(sys.modules['colorsys'] is colorsys)\n"
    )
    assert out == "True"


def test_threads_reading_a_deferred_module_at_once_share_one_loaded_module() -> None:
    out = _run(
        "import sys, threading\n"
        "from agent.core.deferred import defer_stdlib\n"
        "defer_stdlib(('colorsys',))\n"
        "import colorsys\n"
        "start = threading.Barrier(8)\n"
        "got = []\n"
        "def read():\n"
        "    start.wait()\n"
        "    got.append(colorsys.hls_to_rgb)\n"
        "threads = [threading.Thread(target=read) for _ in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
        "print(len(got), len({id(f) for f in got}), got[0] is sys.modules['colorsys'].hls_to_rgb)\n"
    )
    assert out == "8 1 True"


def test_the_cli_defers_inspect_and_traceback_and_they_still_work() -> None:
    """``agent.cli`` defers them; a later use (an exception logged with its traceback, a
    dataclass without a docstring) loads them and works as ever."""
    out = _run(
        "import io, sys\n"
        "import agent.cli\n"
        "import logging\n"
        "from agent.core.deferred import Deferred\n"
        "def deferred():\n"
        "    names = ('inspect', 'traceback', 'linecache', 'tokenize')\n"
        "    return [n for n in names if isinstance(sys.modules.get(n), Deferred)]\n"
        "print(deferred())\n"
        "buf = io.StringIO()\n"
        "log = logging.getLogger('t')\n"
        "log.addHandler(logging.StreamHandler(buf))\n"
        "try:\n"
        "    raise ValueError('boom')\n"
        "except ValueError:\n"
        "    log.exception('failed')\n"
        "text = buf.getvalue()\n"
        "print('Traceback (most recent call last)' in text, 'ValueError: boom' in text)\n"
        "from dataclasses import dataclass\n"
        "@dataclass\n"
        "class P:\n"
        "    x: int\n"
        "print(P.__doc__)\n"
        "print(deferred())\n"
    )
    assert out.splitlines() == [
        "['inspect', 'traceback', 'linecache', 'tokenize']",
        "True True",
        "P(x: int)",
        "['tokenize']",  # only to read a source file: `-c` code has none
    ]


def test_load_deferred_leaves_only_real_modules_in_sys_modules() -> None:
    """What ``agent run`` does at its start: every stand-in is loaded, ``sys.modules`` holds the
    real modules and a stand-in bound before reads through to its module."""
    out = _run(
        "import sys\n"
        "from agent.core.deferred import Deferred, defer_stdlib, load_deferred\n"
        "defer_stdlib(('colorsys', 'this_is_not_deferred_twice'))\n"
        "sys.modules.pop('this_is_not_deferred_twice')\n"
        "import colorsys\n"
        "load_deferred(('colorsys', 'this_is_not_deferred_twice'))\n"
        "real = sys.modules['colorsys']\n"
        "print(isinstance(real, Deferred), real.__spec__.name)\n"
        "print(colorsys.rgb_to_hsv is real.rgb_to_hsv)\n"
    )
    assert out.splitlines() == ["False colorsys", "True"]


def test_agent_run_holds_no_stand_in_once_started(tmp_path: Path) -> None:
    """``agent run -o`` (one pass, no listener): once its handler starts, no deferred
    standard-library module is left as a stand-in."""
    (tmp_path / "c.json").write_text(
        '{"sources": {"s": {"commands": [{"id": "a", "check": "true", "change": "true"}]}},'
        f' "run": {{"stateDir": "{tmp_path / "state"}"}}}}'
    )
    out = _run(
        "import sys, atexit\n"
        "from agent.core.deferred import Deferred\n"
        "atexit.register(lambda: print(sorted(n for n, m in sys.modules.items()"
        " if isinstance(m, Deferred))))\n"
        "from agent.cli import main\n"
        f"sys.exit(main(['-c', {str(tmp_path / 'c.json')!r}, '-l', 'error', 'run', '-o']))\n"
    )
    assert out.splitlines()[-1] == "[]"
