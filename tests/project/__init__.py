"""Whole-repository checks: docs, layout rules, shipped unit files."""
