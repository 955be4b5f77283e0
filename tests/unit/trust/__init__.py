"""Tests of ``agent.trust``."""
