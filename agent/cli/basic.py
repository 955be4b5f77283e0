"""Registrar for the foundation subcommands: generate-keys, jwt, compare, show-config, version,
completion."""

from __future__ import annotations

import argparse

from agent.cli import version_line

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def _register_generate_keys(sub: Any) -> None:
    """Add ``generate-keys`` (alias ``gen-keys``) to ``sub``."""
    p = sub.add_parser(
        "generate-keys",
        aliases=["gen-keys"],
        help="generate a signing/verify key pair",
        description=(
            "Print {privateKey, publicKey} as JSON. Both keys share one id. With --private-file "
            "and --public-file, write the private key (mode 0600) and the public key (mode 0644) "
            "to files instead; an existing file is kept unless --force is given."
        ),
    )
    p.add_argument("name", nargs="?", help="key id (default: 10 random characters)")
    p.add_argument(
        "-a",
        dest="algorithm",
        default="ed25519",
        choices=("best", "ed25519", "ecp256", "rsa2048"),
        help="key algorithm (default ed25519)",
    )
    p.add_argument(
        "--private-file",
        metavar="PATH",
        default="",
        help="write the private key to PATH, mode 0600 (needs --public-file)",
    )
    p.add_argument(
        "--public-file",
        metavar="PATH",
        default="",
        help="write the public key to PATH, mode 0644 (needs --private-file)",
    )
    p.add_argument(
        "--force", action="store_true", help="overwrite existing key files (default: refuse)"
    )
    p.set_defaults(handler="agent.cli.keys_cmds:cmd_generate_keys")


def register(sub: Any) -> None:
    """Add the foundation subcommands to ``sub`` (an argparse subparsers action)."""
    _register_generate_keys(sub)

    p = sub.add_parser(
        "jwt",
        help="decode and verify a JWT file or URL",
        description="Print the decoded claims as indented JSON; exit 1 if verification fails.",
    )
    p.add_argument(
        "-s",
        dest="source",
        default="",
        help="verify as this source would: its verifyKeys/verifyCommands and trust policy",
    )
    p.add_argument(
        "--action",
        default="",
        choices=("push", "pull", "check", "shell"),
        help="with -s: judge the token for this action (default push); prints the chain",
    )
    p.add_argument("path", help="JWT file path or http(s) URL")
    p.set_defaults(handler="agent.cli.keys_cmds:cmd_jwt")

    p = sub.add_parser(
        "compare",
        help="compare two JWTs by manifest, version and pattern",
        description="Exit 0 when equal; otherwise print a diff and exit 1.",
    )
    p.add_argument("-i", dest="ignore_version", action="store_true", help="ignore etchaVersion")
    p.add_argument(
        "-s",
        dest="source",
        default="",
        help="verify both as this source would: its verifyKeys/verifyCommands and trust policy",
    )
    p.add_argument("new", help="new JWT path or URL")
    p.add_argument("old", help="old JWT path or URL")
    p.set_defaults(handler="agent.cli.keys_cmds:cmd_compare")

    _register_misc(sub)


def _register_misc(sub: Any) -> None:
    """show-config, version and completion."""
    p = sub.add_parser(
        "show-config",
        help="print the merged config as JSON (secrets masked)",
        description="Print the config as loaded (file, AGENT_CONFIG, AGENT_* variables, then -x "
        "overrides) as JSON, with secrets masked.",
    )
    p.set_defaults(handler="agent.cli.config_cmds:cmd_show_config")

    p = sub.add_parser(
        "version",
        help="print the agent version",
        description="Print `agent <version>`; `agent --version` prints the same.",
    )
    p.set_defaults(handler="agent.cli.basic:cmd_version")

    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Print a completion script generated from this command's parser. "
        'bash: `eval "$(agent completion bash)"` in ~/.bashrc; zsh: `agent completion zsh > '
        '"${fpath[1]}/_agent"`; fish: `agent completion fish > '
        "~/.config/fish/completions/agent.fish`.",
    )
    p.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell")
    p.set_defaults(handler="agent.cli:cmd_completion")


def cmd_version(args: argparse.Namespace) -> int:
    """Print the version."""
    print(version_line())
    return 0
