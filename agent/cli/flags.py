"""Argument groups shared by the verbs that reach a target over HTTPS (``push``, ``shell``,
``status``): ``--help`` (``-h`` is the host, as in Etcha), ``-h HOST``, ``-p PORT``, ``-u PATH``
and ``--fingerprint``. Registrar modules use it; it imports nothing heavy."""

from __future__ import annotations

import argparse

FINGERPRINT_HELP = "pin the target's certificate (as `agent fingerprint` prints it on the target)"


def add_target_flags(
    p: argparse.ArgumentParser,
    *,
    host_help: str,
    path_help: str = "",
    fingerprint_help: str = FINGERPRINT_HELP,
) -> None:
    """Add ``--help``, ``-h HOST``, ``-p PORT``, ``-u PATH`` (when ``path_help``) and
    ``--fingerprint`` to ``p`` (made with ``add_help=False``)."""
    p.add_argument("--help", action="help", help="show this help message and exit")
    p.add_argument("-h", dest="host", default=None, metavar="HOST", help=host_help)
    p.add_argument("-p", dest="port", default=None, metavar="PORT", help="port (default 4000)")
    if path_help:
        p.add_argument("-u", dest="path", default=None, metavar="PATH", help=path_help)
    p.add_argument(
        "--fingerprint",
        dest="fingerprint",
        default=None,
        metavar="sha256:HEX",
        help=fingerprint_help,
    )


__all__ = ["FINGERPRINT_HELP", "add_target_flags"]
