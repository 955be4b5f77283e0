"""Tests of ``agent.net``."""
