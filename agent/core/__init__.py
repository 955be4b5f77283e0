"""The ``agent.core`` layer (see docs/ARCHITECTURE.md)."""
