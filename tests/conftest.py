"""Shared, generic pytest fixtures.

``interop`` is Etcha's documented keys and tokens (``../shared/interop/vectors.json``), from the
copy in ``tests/data/interop_vectors.json`` so tests never depend on a directory outside the repo.
``test_interop_copy_matches_shared`` (in tests/test_keys.py) catches a stale copy when ``shared/``
is present.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

TESTS_DIR = Path(__file__).resolve().parent
INTEROP_COPY = TESTS_DIR / "data" / "interop_vectors.json"
#: Where shared/ lives beside the repository (CI clones it as ../shared).
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def interop() -> dict[str, Any]:
    """Interop vectors: ``keyPairs``, ``publicKeys``, ``tokens`` (T1, T2), ``byteExact`` (V1)."""
    data: dict[str, Any] = json.loads(INTEROP_COPY.read_text())
    return data
