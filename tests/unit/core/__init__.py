"""Tests of ``agent.core``."""
