"""agent: a GitOps configuration agent that distributes signed Pattern JWTs.

Wire-compatible with Etcha (candiddev/etcha). See docs/ and ../shared/SPEC.md for the contract.
"""

__version__ = "0.1.0"
