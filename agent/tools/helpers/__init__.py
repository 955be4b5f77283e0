"""The helper commands pattern scripts call: ``copy``, ``dir``, ``file``, ``line``, ``link``.

Every helper takes a mode:

- ``check``: exit 0 when the target is already in the desired state; otherwise print one line
  to stderr saying what differs and exit 1. Never modifies anything.
- ``change``: make the target so. Idempotent: a second ``change`` does nothing and exits 0.
- ``remove``: delete the target; exits 0 when it is already absent.

Removal never destroys what the helper did not create. A remove deletes only the kind of thing its
``change`` makes, in the state ``change`` leaves it, and otherwise fails (exit 1) naming what it
found, with nothing deleted:

- ``dir remove``: only an empty directory (``directory not empty`` otherwise); never a symlink.
- ``file remove``: only a regular file or a symlink (the link, never its target). Given contents
  (``-`` = stdin), only a regular file with exactly those contents.
- ``copy remove``: only a regular file whose contents equal the source's.
- ``link remove``: only a symlink that points at ``src``.
- ``line remove``: only lines that ``change`` would leave as they are (the whole line is a match
  whose replacement is the line itself) and lines equal to the replacement; the file stays.

Invariants:

- Contents are written atomically: a temp file in the same directory gets the data, the mode and
  the owner, is fsynced, then ``os.replace``-d over the target, and the directory is fsynced. The
  target never appears with partial contents or the wrong permissions.
- Owners and groups are names or numeric ids. When the process may not chown (not root), a check
  still reports the mismatch and a change fails with a clear error before anything is written.
- ``copy`` reads local paths or ``http(s)`` URLs (``#Header:value\\r\\n...`` fragment = request
  headers) through :mod:`urllib` with a timeout and a size bound; header values never appear in
  messages.
- ``line`` applies a regular expression to the whole text with ``^``/``$`` matching at line
  boundaries (as if prefixed with ``(?m)``); the replacement expands Go-style ``${1}``/``$name``
  groups (``$$`` is a literal ``$``). When nothing matches, the replacement is appended as a line
  unless the text already contains it. ``check`` passes when a ``change`` would be a no-op.

One module per helper (:mod:`.file`, :mod:`.dir`, :mod:`.copy`, :mod:`.line`, :mod:`.link`) over
the shared primitives of :mod:`.fs`; the ``agent`` verbs (:mod:`agent.cli.file_cmds`) call them.
Errors are :class:`~agent.core.errors.CommandError` (exit 1) or
:class:`~agent.core.errors.UsageError` (exit 2), each one line.
"""
