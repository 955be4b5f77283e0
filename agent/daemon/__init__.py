"""The ``agent.daemon`` layer (see docs/ARCHITECTURE.md)."""
