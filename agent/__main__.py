"""The ``agent`` executable: the console script (``agent.__main__:main``) and ``python -m agent``.

Start-up and exit cost (issue 14): a CLI call imports a few hundred modules, which allocates some
hundred thousand long-lived objects (modules, classes, functions) and no garbage. With the
collector on, those allocations trigger collections that find nothing (about 3 ms), and the
interpreter's last collection at exit walks them all again (about 6 ms). So :func:`main` turns
the collector off while the CLI and the verb's module load, then freezes what was loaded (moved
to the permanent generation, out of every later collection; also what a forked render worker
shares with the daemon) and turns the collector back on before the verb runs. At exit it freezes
again, so the last collection skips the verb's live objects; files, logs and state are closed
explicitly by the code that wrote them, and stdout and stderr are flushed by the interpreter.

The collector is left alone when :func:`agent.cli.main` is called from Python (tests, embedding).
"""

from __future__ import annotations

import gc


def _loaded() -> None:
    """The verb's module is loaded: keep what start-up allocated out of every collection."""
    gc.freeze()
    gc.enable()


def main() -> int:
    """Run the CLI (``sys.argv``) and return its exit code."""
    gc.disable()
    try:
        from agent.cli import main as cli_main  # lazy: after the collector is off

        return cli_main(loaded=_loaded)
    finally:
        gc.freeze()  # the interpreter's last collection skips what is still alive


if __name__ == "__main__":
    raise SystemExit(main())
