"""The ``agent.jws`` layer (see docs/ARCHITECTURE.md)."""
