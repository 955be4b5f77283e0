"""Tests of ``agent.tools``."""
