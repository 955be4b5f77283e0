"""Tests of ``agent.jws``."""
