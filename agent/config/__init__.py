"""The ``agent.config`` layer (see docs/ARCHITECTURE.md)."""
