"""Generated docs are current, and every `agent …` command shown in the docs parses.

- docs/cli.md must equal ``agent.cli.docgen.render_cli_reference()`` and docs/configuration.md
  ``agent.config.schema.render_reference()`` (regenerate both with ``python -m agent.cli.docgen``).
- Every shell line starting with ``agent`` inside a fenced block of the examples' READMEs and
  the user docs is parsed by the real argparse parser: the subcommand and its flags must exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from support import REPO

from agent.cli import build_parser
from agent.cli.docgen import render_cli_reference
from agent.config.schema import render_reference
from agent.core.errors import UsageError

DOCS_WITH_COMMANDS = sorted(
    [
        *REPO.glob("examples/**/README.md"),
        REPO / "docs" / "quickstart.md",
        REPO / "docs" / "patterns.md",
    ]
)


def test_cli_reference_is_generated_from_the_parser() -> None:
    assert (REPO / "docs" / "cli.md").read_text() == render_cli_reference(), (
        "docs/cli.md is stale: run python -m agent.cli.docgen"
    )


def test_configuration_reference_is_generated_from_the_config_schema() -> None:
    assert (REPO / "docs" / "configuration.md").read_text() == render_reference(), (
        "docs/configuration.md is stale: run python -m agent.cli.docgen"
    )


def agent_commands(text: str) -> list[str]:
    """``agent …`` command lines in fenced code blocks, continuation lines joined."""
    out: list[str] = []
    in_block = False
    pending = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + raw.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        for part in re.split(r"\s*(?:&&|;|\|\|?)\s*", line):
            part = part.strip()
            if part.startswith("agent "):
                out.append(part)
    return out


def test_docs_show_agent_commands() -> None:
    for doc in DOCS_WITH_COMMANDS:
        assert doc.is_file(), doc
    commands = [c for doc in DOCS_WITH_COMMANDS for c in agent_commands(doc.read_text())]
    assert len(commands) >= 30


@pytest.mark.parametrize("doc", DOCS_WITH_COMMANDS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_agent_command_in_the_docs_parses(doc: Path) -> None:
    parser = build_parser()
    for command in agent_commands(doc.read_text()):
        argv = shlex.split(command.rstrip("&").strip(), comments=True)
        words: list[str] = []
        for word in argv[1:]:
            if re.match(r"\d?>|&$", word):  # a redirection or & ends the command's words
                break
            words.append(word)
        try:
            parser.parse_args(words)
        except (UsageError, SystemExit) as exc:
            raise AssertionError(f"{doc.name}: {command!r} does not parse: {exc}") from exc


def test_parser_check_catches_a_wrong_command() -> None:
    parser = build_parser()
    with pytest.raises(UsageError):
        parser.parse_args(shlex.split("push --no-such-flag web x.jsonnet"))
    with pytest.raises(UsageError):
        parser.parse_args(["deploy", "x"])
