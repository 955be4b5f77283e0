"""Size bounds shared by every layer (one definition each)."""

from __future__ import annotations

#: Default of ``run.maxTokenBytes``: the one size bound of a JWT (push body, pull, verify).
#: Read the configured value as ``config.run.max_token_bytes``.
DEFAULT_MAX_TOKEN_BYTES = 8 * 1024 * 1024

__all__ = ["DEFAULT_MAX_TOKEN_BYTES"]
