"""Tests of ``agent.pattern``."""
