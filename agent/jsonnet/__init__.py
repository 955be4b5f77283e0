"""The ``agent.jsonnet`` layer (see docs/ARCHITECTURE.md)."""
