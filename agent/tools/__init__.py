"""The ``agent.tools`` layer (see docs/ARCHITECTURE.md)."""
