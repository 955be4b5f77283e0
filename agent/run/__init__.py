"""The ``agent.run`` layer (see docs/ARCHITECTURE.md)."""
