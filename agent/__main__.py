"""`python -m agent` entry point."""

from agent.cli import main

raise SystemExit(main())
