"""Tests of ``agent.config``."""
