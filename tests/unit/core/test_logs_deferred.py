"""``agent.core.logs`` with ``logging`` deferred (issue 14): a CLI run that logs nothing at its
level never loads ``logging``; the first record that counts loads it with the handler set up.

The subprocess tests start a fresh interpreter (this one has ``logging`` loaded already).
"""

from __future__ import annotations

import logging
import subprocess

import pytest
from support import run_python

from agent.core.logs import get_logger

_PRELUDE = (
    "import sys\n"
    "from agent.core.deferred import Deferred, defer_stdlib\n"
    "defer_stdlib()\n"
    "from agent.core.logs import get_logger, setup\n"
    "log = get_logger('agent.t')\n"
    "def deferred():\n"
    "    return isinstance(sys.modules['logging'], Deferred)\n"
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    res = run_python(_PRELUDE + code)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_records_below_the_level_do_not_load_logging() -> None:
    res = _run(
        "setup('error', 'human', True)\n"
        "log.debug('a %s', 1)\n"
        "log.info('b')\n"
        "log.warning('c')\n"
        "print(deferred())\n"
    )
    assert res.stdout == "True\n"
    assert res.stderr == ""


def test_the_first_record_at_the_level_loads_logging_with_the_handler() -> None:
    res = _run(
        "setup('info', 'human', True)\n"
        "log.debug('hidden')\n"
        "print(deferred())\n"
        "log.info('shown %s', 'here')\n"
        "print(deferred())\n"
        "import logging\n"
        "print(logging.getLogger('agent').level, len(logging.getLogger('agent').handlers))\n"
    )
    assert res.stdout.splitlines() == ["True", "False", "20 1"]
    assert res.stderr.endswith("INFO  shown here\n"), res.stderr
    assert "hidden" not in res.stderr


def test_is_enabled_for_answers_below_the_level_without_loading_logging() -> None:
    res = _run(
        "setup('info', 'human', True)\n"
        "print(log.isEnabledFor(10), deferred())\n"
        "print(log.isEnabledFor(20), deferred())\n"
        "import logging\n"
        "logging.getLogger('agent.t').setLevel(logging.DEBUG)\n"
        "print(log.isEnabledFor(10))\n"
    )
    # DEBUG under an info set-up: no, and logging stays deferred; INFO: loads it and asks it;
    # once logging is loaded, a level set on the logger itself counts (as ``run -v`` does)
    assert res.stdout.splitlines() == ["False True", "True False", "True"]


def test_a_module_using_logging_directly_gets_the_handler_set_up_before() -> None:
    """A module that calls ``logging.getLogger`` itself loads it; the pending set-up applies."""
    res = _run(
        "setup('info', 'json', True)\n"
        "import logging\n"
        "logging.getLogger('agent.direct').info('direct')\n"
    )
    assert '"logger": "agent.direct"' in res.stderr
    assert '"msg": "direct"' in res.stderr


def test_the_proxy_logs_with_the_callers_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="agent.test.proxy"):
        get_logger("agent.test.proxy").warning("from %s", "here")
    (record,) = [r for r in caplog.records if r.name == "agent.test.proxy"]
    assert record.getMessage() == "from here"
    assert record.levelno == logging.WARNING
    assert record.funcName == "test_the_proxy_logs_with_the_callers_line"
    assert record.pathname == __file__


def test_the_proxy_logs_an_exception_with_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.INFO, logger="agent.test.proxy"):
        try:
            raise ValueError("boom")
        except ValueError:
            get_logger("agent.test.proxy").exception("failed")
    (record,) = [r for r in caplog.records if r.name == "agent.test.proxy"]
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError


def test_threads_logging_first_all_get_the_handler() -> None:
    """Records from threads that race to load logging all go through the set-up handler."""
    res = _run(
        "import threading\n"
        "setup('info', 'json', True)\n"
        "start = threading.Barrier(8)\n"
        "def work(i):\n"
        "    start.wait()\n"
        "    log.info('t%d', i)\n"
        "threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]\n"
        "[t.start() for t in threads]\n"
        "[t.join() for t in threads]\n"
    )
    lines = res.stderr.splitlines()
    assert len(lines) == 8, res.stderr
    assert all(ln.startswith("{") and '"logger": "agent.t"' in ln for ln in lines), res.stderr
