"""The ``agent.trust`` layer (see docs/ARCHITECTURE.md)."""
