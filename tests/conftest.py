"""Shared, generic pytest fixtures.

The helpers themselves (keys, ``free_port``, the agent runner, daemons, config builders) live in
``tests/support.py``, the one implementation every test imports (``from support import …``).

``interop`` is Etcha's documented keys and tokens (``../shared/interop/vectors.json``), from the
copy in ``tests/data/interop_vectors.json`` so tests never depend on a directory outside the repo.
``test_interop_copy_matches_shared`` (in tests/test_keys.py) catches a stale copy when ``shared/``
is present.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from support import INTEROP_COPY


@pytest.fixture(scope="session")
def interop() -> dict[str, Any]:
    """Interop vectors: ``keyPairs``, ``publicKeys``, ``tokens`` (T1, T2), ``byteExact`` (V1)."""
    data: dict[str, Any] = json.loads(INTEROP_COPY.read_text())
    return data
