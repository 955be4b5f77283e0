"""Tests of ``agent.run``."""
