"""Tests of ``agent.daemon``."""
