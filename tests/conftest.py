"""Shared, generic pytest fixtures.

The helpers themselves (keys, ``free_port``, the agent runner, daemons, config builders) live in
``tests/support.py``, the one implementation every test imports (``from support import …``).

``interop`` is Etcha's documented keys and tokens (``../shared/interop/vectors.json``), from the
copy in ``tests/data/interop_vectors.json`` so tests never depend on a directory outside the repo.
``test_interop_copy_matches_shared`` (in tests/unit/jws/test_keys.py) catches a stale copy when
``shared/``
is present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from support import INTEROP_COPY, TESTS_DIR


@pytest.fixture(scope="session")
def interop() -> dict[str, Any]:
    """Interop vectors: ``keyPairs``, ``publicKeys``, ``tokens`` (T1, T2), ``byteExact`` (V1)."""
    data: dict[str, Any] = json.loads(INTEROP_COPY.read_text())
    return data


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test under a ``tests/integration/`` directory carries the ``integration`` marker
    (real daemons on 127.0.0.1), whether or not its file says so."""
    for item in items:
        if "integration" in Path(item.path).relative_to(TESTS_DIR).parts[:-1]:
            item.add_marker(pytest.mark.integration)
