"""The ``agent.pattern`` layer (see docs/ARCHITECTURE.md)."""
