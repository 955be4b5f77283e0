"""The generated configuration reference (``docs/configuration.md``).

Responsibility: render the markdown reference from the schema tables of
:mod:`agent.config.fields`, the alias and ignored-key tables, and the masking rules of
:mod:`agent.config.masking`, so the reference cannot drift from the code.

Invariant: rendering is pure (no I/O); ``python -m agent.cli.docgen`` and
``python -m agent.config.schema`` write the file, ``tests/project/test_docs.py`` checks it is
current.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agent.config.fields import (
    HTTP_CLIENT,
    IGNORED,
    IGNORED_SOURCE,
    IGNORED_TOP,
    KIND_DOC,
    LISTENER_KEYS,
    RAW_SECTIONS,
    RECORDS,
    SECTIONS,
    SOURCE,
    TARGET,
    Field,
)
from agent.config.load import CONFIG_FILE_NAMES
from agent.config.masking import MASK, SECRET_WORDS, field_is_secret


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_doc(f: Field) -> str:
    if f.default_doc:
        return f.default_doc
    return f"`{json.dumps(f.default, sort_keys=True)}`"


def _table(fields: Sequence[Field], prefix: str) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for f in fields:
        kind = KIND_DOC[f.kind]
        if f.choices:
            kind += f" ({', '.join(f.choices)})"
        lines.append(f"| `{prefix}{f.key}` | {kind} | {_cell(_default_doc(f))} | {_cell(f.doc)} |")
    return lines


def _secret_field_names() -> list[str]:
    """Every schema field :meth:`Config.masked_dict` masks, as ``section.key`` paths."""
    groups = [*SECTIONS.items(), ("httpClient", HTTP_CLIENT)]
    names = [f"{s}.{f.key}" for s, fields in groups for f in fields if field_is_secret(s, f)]
    names += [f"{s}.*.{f.key}" for s, fs in RECORDS.items() for f in fs if field_is_secret(s, f)]
    return names


def render_reference() -> str:
    """The markdown of ``docs/configuration.md``, generated from the config schema."""
    return "\n".join([*_loading_order(), *_sections(), *_aliases(), *_ignored_and_secrets()])


def _loading_order() -> list[str]:
    return [
        "# Configuration reference",
        "",
        "<!-- Generated from agent/config/schema.py by `python -m agent.config.schema`; "
        "do not edit. -->",
        "",
        "## Loading order",
        "",
        "Each step overrides the one before. Objects merge key by key; lists and scalars replace;",
        "`null` resets a key to its default, deletes a source or target, and is ignored for a",
        "whole section.",
        "",
        "1. Defaults (below).",
        "2. The config file: `-c PATH` (must exist), else the first of "
        + ", ".join(f"`{n}`" for n in CONFIG_FILE_NAMES)
        + " found in the current directory, then each parent. No file: defaults only. "
        "`.yaml`/`.yml` are YAML; anything else is Jsonnet (JSON is valid Jsonnet), with imports "
        "relative to the importing file.",
        "3. `AGENT_CONFIG`: Jsonnet text.",
        "4. `AGENT_<path>=value` variables whose name has a lowercase letter "
        "(e.g. `AGENT_run_stateDir=/var/lib/agent`), in name order.",
        "5. `-x <path>=value` arguments, in order; `-x config=<jsonnet>` merges Jsonnet.",
        "",
        "A `<path>` is split on `_` (`sources_web_allowPush`). Values: Go-style integers "
        "(`+5`, `-3`, `007` → 7), `true`/`false`, JSON when starting with `[` or `{`, "
        "`null`, otherwise a string.",
        "",
        "Unknown keys and wrong types are errors naming the key and the file or override.",
        "Keys inside commands and exec objects are checked when the config loads too, and named "
        "with their full path (`sources.web.commands[0].exec.nope`), with the closest known key "
        "as a hint.",
        "Durations are Go duration strings (`30s`, `5m`, `1h30m`) or numbers of seconds.",
        "`run.stateDir` is made absolute against the current directory.",
        "",
    ]


def _sections() -> list[str]:
    out: list[str] = []
    for section, fields in SECTIONS.items():
        out += [f"## `{section}`", "", *_table(fields, f"{section}."), ""]
    out += ["## `httpClient`", "", *_table(HTTP_CLIENT, "httpClient."), ""]
    out += [
        "`httpClient.tlsSkipVerify` and `httpClient.caFile` are the same settings as "
        "`build.tlsSkipVerify` and `build.caFile`; they apply to pull, push and `getFile`.",
        "",
    ]
    for key, (default, doc) in RAW_SECTIONS.items():
        out += [
            f"## `{key}`",
            "",
            f"{doc} Default: `{json.dumps(default, sort_keys=True)}`.",
            "",
        ]
    out += ["## `sources.<name>`", "", *_table(SOURCE, ""), ""]
    out += ["## `targets.<name>`", "", *_table(TARGET, ""), ""]
    return out


def _aliases() -> list[str]:
    out = [
        "## Verify keys",
        "",
        "`verifyKeys` is a list whose items are key strings or objects "
        '`{"key": "...", "notBefore": "2025-01-01T00:00:00Z", "notAfter": "..."}` '
        '(RFC 3339 with a zone). A single string is a one-item list; `""` is an empty list. '
        "Every key string must parse.",
        "",
        "## Aliases",
        "",
        "Within one layer the later name in each row wins when several are given; a warning names "
        "an old name whenever it is used, and names the losing key when two names disagree.",
        "",
        "| names (old → new) | stored as |",
        "|---|---|",
    ]
    for key in LISTENER_KEYS:
        out.append(f"| `run.{key}`, `http.{key}` (old), `httpServer.{key}` | `run.{key}` |")
    out.append("| `build.caFile`, `httpClient.caFile` | `build.caFile` |")
    out.append(
        "| `build.pushTLSSkipVerify` (old), `build.tlsSkipVerify`, `httpClient.tlsSkipVerify` "
        "| `build.tlsSkipVerify` |"
    )
    for name in ("Metrics", "Pprof"):
        old, new = f"run.system{name}Secret", f"run.system{name}Key"
        out.append(f"| `{old}` (old), `{new}` | `{new}` |")
    out += [
        "| `sources.*.runFrequencySec` (old, integer), `sources.*.runFrequency` "
        "| `sources.*.runFrequency` |",
        "| `targets.*.string` (old), `targets.*.port` | `targets.*.port` |",
        "| `build.pushTargets.<name>` (old): `{hostname, insecure, path, port, sources: [...], "
        "vars}` | `targets.<name>`: `path` → `pathPush`, each of `sources` → "
        '`sourcePatterns: {<source>: ""}` (push the pattern or command given on the command '
        "line); a name also in `targets` keeps the `targets` entry |",
        "",
        "## Accepted and ignored (with a warning)",
        "",
    ]
    return out


def _ignored_and_secrets() -> list[str]:
    out: list[str] = []
    ignored = [*IGNORED_TOP, *(f"{s}.{k}" for s, ks in IGNORED.items() for k in ks)]
    ignored += [f"sources.*.{k}" for k in IGNORED_SOURCE]
    ignored.append("jsonnet.*")
    out += [f"- `{name}`" for name in ignored]
    out += [
        "",
        "## Errors",
        "",
        "- A `run.jwtRule` or `sources.*.jwtRule` that does not compile is an error at load "
        "(the message ends with `see docs/configuration.md#jwtrule`).",
        "",
        "## jwtRule",
        "",
        "`run.jwtRule` and `sources.<name>.jwtRule` are [CEL](https://cel.dev) expressions "
        "(evaluated by the `common-expression-language` package). A token is admitted only when "
        "every configured rule (`run.jwtRule`, then the source's) evaluates to the boolean "
        "`true`; anything else, and an evaluation error such as a missing claim, refuses it with "
        "reason `jwt_rule`. The rule runs after every other check and sees two variables: "
        "`claims` (the verified claims) and `header` (the protected header). Example: "
        '`claims.iss == "ci" && has(claims.jti) && header.typ == "JWT"`.',
        "",
        "Etcha's `jwtRule` uses the [expr](https://expr-lang.org) language, not CEL. The "
        "differences that matter: claims are reached as `claims.x` (expr: bare `x`), test for "
        "an optional claim with `has(claims.x)` (expr: `x != nil`), strings use `startsWith`/"
        "`endsWith`/`contains`/`matches` methods (expr: operators), membership is `x in list`, "
        "there is no `nil` (use `has`), and numbers compare only within their type (`claims.exp "
        "> 1700000000` works because JSON numbers are doubles or ints; mix with care). A rule "
        "that does not compile is refused when the config loads.",
        "",
        "Why this package: of the maintained CEL implementations on PyPI, "
        "`common-expression-language` (Rust `cel-interpreter` bindings) returns plain Python "
        "values (only the Python `True` accepts), raises on compile and evaluation errors, and "
        "evaluates in native code; `cel-python` (pure-Python evaluator) pulls in lark, pendulum, "
        "google-re2 and jmespath and returns its own value types; Google's `cel-expr-python` is "
        "at 0.1. The package is imported only when a rule is configured.",
        "",
        "## Secrets in `show-config`",
        "",
        f"`agent show-config` prints the effective config with these values replaced by `{MASK}`:",
        "",
        "- " + ", ".join(f"`{p}`" for p in _secret_field_names()) + ".",
        "- Every key anywhere in `vars`, `exec` (its `env` too), commands and the other "
        "free-form objects whose name contains "
        + ", ".join(f"`{w}`" for w in SECRET_WORDS)
        + " (case-insensitive, nested), except public-key names: `publicKey`, `verifyKeys` "
        "(and names such as `sshPublicKey`).",
        "- In every URL (`sources.*.pullPaths`, `sources.*.webhookPaths`, and any `http(s)://` "
        "URL inside another string value): the user info (`***@host`), each query value "
        "(`?sig=***`) and each `#Name:value` header value (`#Authorization:***`). The "
        "pull-path options `skipVerify`, `clientSkipVerify` and `clientTimeout` stay visible.",
        "",
        "Not masked, because they cannot hold a secret: durations, sizes and booleans (such as "
        "`build.pushTokenExpiresIn` and `sources.*.maxTokenAge`), key file paths "
        "(`build.signingKeyPath`, `run.tlsKeyPath`), key ids (`sources.*.allowedKeys`), the "
        "public verify keys, and source, target and linter names. Empty values stay empty.",
        "",
    ]
    return out


__all__ = ["render_reference"]
