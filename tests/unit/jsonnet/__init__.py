"""Tests of ``agent.jsonnet``."""
