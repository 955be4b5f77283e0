"""Handlers for ``agent audit verify|show|key`` (imported on use; no daemon stack)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.cli.common import load_config_for
from agent.config.schema import Config
from agent.core.durations import parse_duration
from agent.jws.audit import KEY_FILE, load_or_create_key
from agent.jws.keys import VerifyKey, parse_signing_key, parse_verify_key
from agent.tools.audit import (
    format_table,
    parse_receipt,
    read_entries,
    select_entries,
    verify_dir,
)

__all__ = ["cmd_key", "cmd_show", "cmd_verify"]


def _state_dir(config: Config) -> Path:
    return Path(config.run.state_dir or ".")


def _audit_dir(args: argparse.Namespace, config: Config) -> Path:
    return Path(args.dir) if args.dir else _state_dir(config) / "audit"


def _host_key(config: Config) -> VerifyKey | None:
    """The host's own audit public key, without generating one."""
    if config.run.audit_signing_key:
        return parse_signing_key(config.run.audit_signing_key).public()
    path = _state_dir(config) / KEY_FILE
    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return parse_signing_key(text).public()


def cmd_verify(args: argparse.Namespace) -> int:
    """``agent audit verify [--public-key KEY] [--receipt SEQ:HASH] [DIR]``: 0 intact, 1 broken."""
    config = load_config_for(args)
    receipt = parse_receipt(args.receipt) if args.receipt else None
    key = parse_verify_key(args.public_key) if args.public_key else _host_key(config)
    directory = _audit_dir(args, config)
    report = verify_dir(directory, public_key=key, receipt=receipt)
    if not report.files:
        print(f"ERROR: audit verify: no audit files in {directory}", file=sys.stderr)
        return 1
    if report.broken is not None:
        print(f"BROKEN: {report.broken}")
        return 1
    if not report.checkpoints:
        signed = "none to check (no checkpoint yet)"
    else:
        signed = "verified" if report.signed else "not checked (no public key)"
    print(
        f"OK: {report.entries} entries (seq {report.first_seq}..{report.last_seq}) in "
        f"{len(report.files)} file(s), {report.checkpoints} checkpoint(s), signatures {signed}"
    )
    print(f"Last: {report.last_seq}:{report.last_hash}")
    if receipt is not None:
        if report.receipt_error:
            print(f"RECEIPT NOT CONFIRMED: {report.receipt_error}")
            return 1
        print(f"Receipt {receipt[0]}:{receipt[1]} confirmed")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """``agent audit show [--source S] [--since DURATION] [--event E] [-f json] [DIR]``."""
    config = load_config_for(args)
    since = parse_duration(args.since, name="--since") if args.since else None
    entries = select_entries(
        read_entries(_audit_dir(args, config)), source=args.source, since=since, event=args.event
    )
    as_json = args.output_format == "json" or (
        args.output_format is None and getattr(args, "log_format", None) == "json"
    )
    if as_json:
        print(json.dumps(entries, indent=2))
    else:
        for line in format_table(entries):
            print(line)
    return 0


def cmd_key(args: argparse.Namespace) -> int:
    """``agent audit key``: print the audit public key string."""
    config = load_config_for(args)
    key = load_or_create_key(_state_dir(config), config.run.audit_signing_key)
    print(key.public())
    return 0
