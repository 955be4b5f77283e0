"""Unit tests, one package per ``agent`` package."""
