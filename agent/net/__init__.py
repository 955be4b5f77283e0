"""The ``agent.net`` layer (see docs/ARCHITECTURE.md)."""
