"""The typed config tree and its loading order.

Responsibility: turn defaults, one config file, ``AGENT_CONFIG``, ``AGENT_<path>`` environment
variables and ``-x path=value`` overrides into one frozen :class:`Config`.

Invariants:

- Every layer is checked on its own before it is merged, so an unknown key or a wrong type is
  reported with the layer that holds it (``in /etc/agent.jsonnet``, ``in override -x run_x``).
- Aliases (SPEC 16, 18) are resolved inside each layer: within one layer the newer name wins, and a
  later layer always wins over an earlier one whatever name it uses.
- Objects merge key-by-key; arrays and scalars replace; ``null`` resets a key to its default (and a
  ``null`` source or target deletes it).
- Commands and exec objects stay raw JSON (``tuple`` / ``Mapping``); ``agent.run.model`` parses
them.
- Durations are stored as float seconds; :meth:`Config.to_dict` writes them back as strings.
- Error and log messages name keys, never values, so secrets never reach them.
- Importing this module is cheap: YAML, Jsonnet and key parsing are imported when first needed.

The schema below (``_SECTIONS``/``_RECORDS``) is the single source of truth: loading,
``to_dict``, masking and the generated reference (``docs/configuration.md``,
:func:`render_reference`) all read it.
"""

from __future__ import annotations

import copy
import difflib
import json
import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from agent.core.durations import parse_duration
from agent.core.errors import AgentError, ConfigError, json_kind
from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES

logger = logging.getLogger(__name__)

#: Names searched for, in each directory from the cwd upward; the nearest directory wins.
CONFIG_FILE_NAMES = ("agent.jsonnet", "agent.yaml", "agent.yml", "agent.json")
#: Prefix of the environment variables that override config keys.
ENV_PREFIX = "AGENT_"
#: What a secret value is replaced with by :meth:`Config.masked_dict`.
MASK = "***"

#: A key whose name contains one of these (case-insensitive) holds a secret, anywhere.
_SECRET_WORDS = ("password", "secret", "token", "key", "credential", "auth", "private")
_SECRET_NAME = re.compile("|".join(_SECRET_WORDS), re.IGNORECASE)
#: Name parts that are public although they contain "key": ``publicKey``, ``verifyKeys``.
_PUBLIC_NAME = re.compile(r"public[_-]?keys?|verify[_-]?keys?", re.IGNORECASE)
#: Schema fields that are secrets whatever their name.
_SECRET_PATHS = frozenset(
    {
        ("build", "signingKey"),
        ("run", "systemMetricsKey"),
        ("run", "systemPprofKey"),
        ("run", "tlsKeyBase64"),
    }
)
#: Field kinds that never hold a secret: numbers, booleans, durations, public keys, key ids.
_PUBLIC_KINDS = frozenset(
    {"bool", "int", "posint", "duration", "duration_opt", "rate", "choice", "port", "verifykeys"}
)
#: Schema string lists whose items are URLs or paths (masked as URLs, see agent.net.fetch.mask_url).
_URL_FIELDS = frozenset({"pullPaths", "webhookPaths"})


def _secret_name(name: str) -> bool:
    """Whether a key name marks a secret (``apiKey``, ``DB_PASSWORD``; not ``sshPublicKey``)."""
    return bool(_SECRET_NAME.search(name)) and bool(_SECRET_NAME.search(_PUBLIC_NAME.sub("", name)))


_RATE = re.compile(r"^[0-9]+-[SMHD]$")
_INT = re.compile(r"^[+-]?[0-9]+$")
_INT64 = 2**63


# --------------------------------------------------------------------------------------------
# Typed tree


@dataclass(frozen=True, slots=True)
class VerifyKeyEntry:
    """One configured verify key, optionally limited to a validity window (UTC).

    Args:
        key: the public key string (``ed25519public:...:kid``).
        not_before: tokens are not accepted with this key before this time.
        not_after: tokens are not accepted with this key after this time.
    """

    key: str
    not_before: datetime | None = None
    not_after: datetime | None = None


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """``build``: signing and the push client."""

    ca_file: str
    push_domain_suffix: str
    push_max_workers: int
    push_token_expires_in: float
    signing_commands: tuple[Any, ...]
    signing_exec: Mapping[str, Any] | None
    signing_key: str = field(repr=False)
    signing_key_path: str
    tls_skip_verify: bool


@dataclass(frozen=True, slots=True)
class CLIConfig:
    """``cli``: log and output settings (command-line flags win over these)."""

    disable_external_native: bool
    log_format: str
    log_level: str
    no_color: bool


@dataclass(frozen=True, slots=True)
class HTTPClientConfig:
    """``httpClient``: TLS settings for pull, push and ``getFile``, and pull redirects.

    ``tls_skip_verify`` and ``ca_file`` are the same values as in :class:`BuildConfig`.
    ``follow_cross_origin_redirects`` lets a pull follow a redirect to another origin (without
    the custom headers, see :mod:`agent.net.fetch`).
    """

    ca_file: str
    no_system_ca: bool
    tls_skip_verify: bool
    follow_cross_origin_redirects: bool = False


@dataclass(frozen=True, slots=True)
class LintConfig:
    """``lint``: files excluded from ``agent lint`` and the external linters."""

    exclude: str
    linters: Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class RunConfig:
    """``run``: the daemon, its listener and the global verifiers."""

    keepalive_timeout: float
    listen_address: str
    max_body_bytes: int
    max_connections: int
    max_connections_per_address: int
    max_token_bytes: int
    push_require_exp: bool
    push_require_jti: bool
    randomized_start_delay_sec: int
    rate_limiter_rate: str
    state_dir: str
    system_metrics_key: str = field(repr=False)
    system_pprof_key: str = field(repr=False)
    timeout_body: float
    timeout_headers: float
    timeout_push: float
    timeout_shell: float
    timeout_webhook: float
    tls_certificate_base64: str
    tls_certificate_path: str
    tls_disable: bool
    tls_key_base64: str = field(repr=False)
    tls_key_path: str
    verify_commands: tuple[Any, ...]
    verify_exec: Mapping[str, Any] | None
    verify_keys: tuple[VerifyKeyEntry, ...]
    webhook_max_concurrent: int


@dataclass(frozen=True, slots=True)
class SourceConfig:
    """``sources.<name>``: where patterns come from and how they run."""

    name: str
    allow_push: bool
    allow_rollback: bool
    allowed_keys: tuple[str, ...]
    check_only: bool
    commands: tuple[Any, ...]
    events_receive: tuple[str, ...]
    events_receive_exit: bool
    events_send: str
    exec: Mapping[str, Any] | None
    max_token_age: float
    no_remove: bool
    no_restore: bool
    pull_ignore_version: bool
    pull_paths: tuple[str, ...]
    run_frequency: float
    run_multi: bool
    shell: str | Mapping[str, Any]
    trigger_only: bool
    verify_commands: tuple[Any, ...]
    verify_exec: Mapping[str, Any] | None
    verify_keys: tuple[VerifyKeyEntry, ...]
    vars: Mapping[str, Any]
    webhook_paths: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """``targets.<name>``: a push destination."""

    name: str
    fingerprint: str
    hostname: str
    insecure: bool
    path_push: str
    path_shell: str
    port: str
    source_patterns: Mapping[str, str]
    vars: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Config:
    """The effective config. Build it with :func:`load_config` or :func:`config_from_dict`."""

    build: BuildConfig
    cli: CLIConfig
    exec: Mapping[str, Any]
    http_client: HTTPClientConfig
    lint: LintConfig
    run: RunConfig
    sources: Mapping[str, SourceConfig]
    targets: Mapping[str, TargetConfig]
    vars: Mapping[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The full effective config in its camelCase JSON form (loadable again)."""
        out: dict[str, Any] = {}
        for section, fields in _SECTIONS.items():
            out[section] = _record_to_dict(getattr(self, _snake(section)), fields)
        out["httpClient"] = {
            "caFile": self.http_client.ca_file,
            "followCrossOriginRedirects": self.http_client.follow_cross_origin_redirects,
            "noSystemCA": self.http_client.no_system_ca,
            "tlsSkipVerify": self.http_client.tls_skip_verify,
        }
        out["exec"] = copy.deepcopy(dict(self.exec))
        out["vars"] = copy.deepcopy(dict(self.vars))
        out["sources"] = {n: _record_to_dict(s, _SOURCE) for n, s in self.sources.items()}
        out["targets"] = {n: _record_to_dict(t, _TARGET) for n, t in self.targets.items()}
        return out

    def masked_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` with every secret value replaced by ``"***"``.

        Masked: ``build.signingKey``, ``run.systemMetricsKey``, ``run.systemPprofKey``,
        ``run.tlsKeyBase64``; every key, anywhere (vars, exec env, commands, nested), whose name
        contains ``password``, ``secret``, ``token``, ``key``, ``credential``, ``auth`` or
        ``private`` (case-insensitive), except public-key names (``publicKey``, ``verifyKeys``)
        and schema fields that cannot hold a secret (durations, sizes, booleans, key file paths,
        key ids); and in every URL (pull paths, webhook paths, any string value) the user info,
        query values and ``#Header:`` values. Empty values stay empty so "unset" remains visible.
        Source, target and linter names are names, never masked.
        """
        return _mask_config(self.to_dict())


# --------------------------------------------------------------------------------------------
# Schema


@dataclass(frozen=True, slots=True)
class _Field:
    key: str
    kind: str
    default: Any
    doc: str
    default_doc: str = ""
    choices: tuple[str, ...] = ()


def _cpu_count() -> int:
    return os.cpu_count() or 1


_DEFAULT_EXEC: dict[str, Any] = {
    "allowOverride": True,
    "command": "/usr/bin/bash -e -o pipefail -c",
    "envInherit": True,
}
_DEFAULT_LINTERS: dict[str, Any] = {
    "shellcheck": {"command": "shellcheck -s bash -e 2016 -e 2154 -"}
}

_BUILD = (
    _Field("caFile", "str", "", "PEM file of extra CA certificates trusted by the push client."),
    _Field("pushDomainSuffix", "str", "", "Suffix appended to target host names when pushing."),
    _Field(
        "pushMaxWorkers",
        "posint",
        _cpu_count,
        "Targets pushed to at the same time.",
        default_doc="number of CPUs",
    ),
    _Field("pushTokenExpiresIn", "duration", "5m", "Lifetime of the JWTs `agent push` signs."),
    _Field("signingCommands", "commands", [], "Commands whose `jwt` event signs (wins over keys)."),
    _Field("signingExec", "exec", None, "Exec for signingCommands (overrides `exec`)."),
    _Field("signingKey", "str", "", "Private key string used to sign JWTs (secret)."),
    _Field("signingKeyPath", "str", "", "File holding the private key string."),
    _Field("tlsSkipVerify", "bool", False, "Skip TLS verification in the push/pull client."),
)
_CLI = (
    _Field(
        "disableExternalNative", "bool", False, "Disable Jsonnet natives that reach out (as -d)."
    ),
    _Field("logFormat", "choice", "human", "Log format.", choices=("human", "json")),
    _Field("logLevel", "choice", "info", "Log level.", choices=("debug", "info", "error", "none")),
    _Field("noColor", "bool", False, "No colour in output."),
)
_HTTP_CLIENT = (
    _Field(
        "followCrossOriginRedirects",
        "bool",
        False,
        "Pulls follow a redirect to another origin, without the custom `#Header:` headers and "
        "URL user info (default: refused; same-origin redirects are always followed).",
    ),
    _Field("noSystemCA", "bool", False, "Trust only `caFile`, not the system CA store."),
)
_LINT = (
    _Field(
        "exclude",
        "regex",
        "etcha.jsonnet|agent.jsonnet",
        "Files `agent lint` skips (regexp).",
    ),
    _Field(
        "linters",
        "linters",
        _DEFAULT_LINTERS,
        "Name -> exec running a linter on stdin; null switches a linter off.",
    ),
)
_RUN = (
    _Field(
        "keepaliveTimeout",
        "duration",
        "15s",
        "Idle time after which a kept-alive connection closes.",
    ),
    _Field("listenAddress", "str", ":4000", "Address the push/webhook listener binds."),
    _Field(
        "maxBodyBytes", "posint", 4 * 1024 * 1024, "Largest webhook request body accepted (413)."
    ),
    _Field(
        "maxConnections",
        "posint",
        256,
        "Open listener connections in all (clamped below the file-descriptor limit).",
    ),
    _Field("maxConnectionsPerAddress", "posint", 32, "Open listener connections per client."),
    _Field(
        "maxTokenBytes",
        "posint",
        DEFAULT_MAX_TOKEN_BYTES,
        "Largest JWT accepted: push bodies (413), pulled and verified tokens.",
    ),
    _Field("pushRequireExp", "bool", False, "Reject pushed JWTs without an `exp` claim."),
    _Field("pushRequireJti", "bool", False, "Reject pushed JWTs without a `jti` claim."),
    _Field("randomizedStartDelaySec", "int", 0, "Random delay (seconds) before the first runs."),
    _Field(
        "rateLimiterRate", "rate", "10-M", "Failed requests allowed per client, `<n>-<S|M|H|D>`."
    ),
    _Field("stateDir", "str", "", "Directory for `<source>.jwt` state.", default_doc="cwd"),
    _Field("systemMetricsKey", "str", "", "`?key=` enabling /etcha/v1/system/metrics (secret)."),
    _Field("systemPprofKey", "str", "", "`?key=` enabling /etcha/v1/system/pprof (secret)."),
    _Field("timeoutBody", "duration", "30s", "Time limit for reading a request body."),
    _Field("timeoutHeaders", "duration", "10s", "Time limit for a request line and its headers."),
    _Field("timeoutPush", "duration", "10m", "Time limit of a push run."),
    _Field("timeoutShell", "duration", "10m", "Time limit of a shell session."),
    _Field("timeoutWebhook", "duration", "10m", "Time limit of a webhook run."),
    _Field("tlsCertificateBase64", "str", "", "Listener certificate, base64 PEM."),
    _Field("tlsCertificatePath", "str", "", "Listener certificate file."),
    _Field("tlsDisable", "bool", False, "Serve plain HTTP (behind a TLS proxy)."),
    _Field("tlsKeyBase64", "str", "", "Listener private key, base64 PEM (secret)."),
    _Field("tlsKeyPath", "str", "", "Listener private key file."),
    _Field("verifyCommands", "commands", [], "Commands whose `jwt` event verifies tokens."),
    _Field("verifyExec", "exec", None, "Exec for verifyCommands."),
    _Field("verifyKeys", "verifykeys", [], "Public keys tried, in order, for every source."),
    _Field("webhookMaxConcurrent", "posint", 4, "Webhook runs at once per source (429 beyond)."),
)
_SOURCE = (
    _Field("allowPush", "bool", False, "Accept pushed JWTs."),
    _Field("allowRollback", "bool", False, "Accept a JWT older than the current one."),
    _Field("allowedKeys", "strlist", [], "Key ids allowed to sign for this source (empty: any)."),
    _Field(
        "checkOnly",
        "bool",
        False,
        "Only run checks (drift is reported), never changes; saves no state.",
    ),
    _Field("commands", "commands", [], "Static commands run when no pattern is set."),
    _Field("eventsReceive", "strlist", [], "Event names that trigger this source."),
    _Field("eventsReceiveExit", "bool", False, "Exit the daemon when an event is received."),
    _Field("eventsSend", "regex", "", "Regexp of event names this source may send."),
    _Field("exec", "exec", None, "Exec overriding the top-level `exec`."),
    _Field("maxTokenAge", "duration_opt", "", "Reject JWTs issued longer ago (empty: off)."),
    _Field("noRemove", "bool", False, "Never run remove scripts in diff-runs."),
    _Field("noRestore", "bool", False, "Do not restore the state JWT at start-up."),
    _Field("pullIgnoreVersion", "bool", False, "Do not re-run when only etchaVersion changed."),
    _Field("pullPaths", "strlist", [], "Paths or URLs a JWT is pulled from."),
    _Field("runFrequency", "duration_opt", "", "How often to pull and run (empty: never)."),
    _Field("runMulti", "bool", False, "Allow concurrent runs of this source."),
    _Field("shell", "shell", "", "Command (or exec) for `agent shell` sessions."),
    _Field("triggerOnly", "bool", False, "Run only when triggered (event, webhook, push)."),
    _Field("verifyCommands", "commands", [], "Commands whose `jwt` event verifies tokens."),
    _Field("verifyExec", "exec", None, "Exec for verifyCommands."),
    _Field("verifyKeys", "verifykeys", [], "Public keys tried after `run.verifyKeys`."),
    _Field("vars", "object", {}, "Variables merged over the top-level `vars`."),
    _Field("webhookPaths", "strlist", [], "HTTP paths that run this source."),
)
_TARGET = (
    _Field(
        "fingerprint",
        "fingerprint",
        "",
        "Pin the target's certificate: `sha256:<hex>` of its DER certificate, as "
        "`agent fingerprint` prints it. Needs neither a CA nor tlsSkipVerify.",
    ),
    _Field("hostname", "str", "", "Host pushed to.", default_doc="the target name"),
    _Field("insecure", "bool", False, "Use http instead of https."),
    _Field("pathPush", "str", "/etcha/v1/push", "Push path prefix."),
    _Field("pathShell", "str", "/etcha/v1/shell", "Shell path prefix."),
    _Field("port", "port", "4000", "Port (string or integer)."),
    _Field("sourcePatterns", "strmap", {}, "Source name -> pattern path or command to push."),
    _Field("vars", "object", {}, "Variables added to the pushed JWT's run vars."),
)

#: Sections made of typed fields.
_SECTIONS: dict[str, tuple[_Field, ...]] = {
    "build": _BUILD,
    "cli": _CLI,
    "lint": _LINT,
    "run": _RUN,
}
#: Sections that map names to typed records.
_RECORDS: dict[str, tuple[_Field, ...]] = {"sources": _SOURCE, "targets": _TARGET}
#: Sections that are raw JSON objects.
_RAW_SECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "exec": (_DEFAULT_EXEC, "Default exec for every command (parsed by agent.run.model)."),
    "vars": ({}, "Variables for every pattern (`vars.sysinfo` etc. are added at render time)."),
}
_LISTENER_KEYS = (
    "listenAddress",
    "rateLimiterRate",
    "tlsCertificateBase64",
    "tlsCertificatePath",
    "tlsKeyBase64",
    "tlsKeyPath",
)
_IGNORED_TOP = ("license", "licenseKey")
_IGNORED: dict[str, tuple[str, ...]] = {
    "cli": ("configPath", "macros"),
    "run": ("commandsMaxWorkers",),
}
_IGNORED_SOURCE = ("runAll",)

_KIND_DOC = {
    "str": "string",
    "bool": "boolean",
    "int": "integer",
    "posint": "integer > 0",
    "duration": "duration",
    "duration_opt": "duration",
    "regex": "regexp",
    "rate": "rate",
    "choice": "string",
    "strlist": "list of strings",
    "strmap": "object of strings",
    "verifykeys": "list of verify keys",
    "commands": "list of commands",
    "exec": "exec object",
    "object": "object",
    "linters": "object of exec objects",
    "port": "string or integer",
    "shell": "string or exec object",
    "fingerprint": "string",
}
#: ``build.pushTargets.<name>``: Etcha's old form of ``targets`` (SPEC 18).
_PUSH_TARGET = (
    _Field("hostname", "str", "", ""),
    _Field("insecure", "bool", False, ""),
    _Field("path", "str", "", ""),
    _Field("port", "port", "4000", ""),
    _Field("sources", "strlist", [], ""),
    _Field("vars", "object", {}, ""),
)
_FINGERPRINT = re.compile(r"^sha256:[0-9a-f]{64}$")


def parse_fingerprint(text: str) -> str:
    """Check a certificate fingerprint and return its canonical form.

    Accepts ``sha256:`` and 64 hex digits, in either case, optionally separated by colons (as
    ``openssl x509 -fingerprint -sha256`` prints them).

    Args:
        text: the fingerprint.

    Returns:
        ``sha256:<64 lowercase hex digits>``.

    Raises:
        ValueError: any other text; the message says what was expected.
    """
    prefix, sep, digits = text.strip().partition(":")
    canonical = f"{prefix.lower()}:{digits.replace(':', '').lower()}" if sep else text
    if not _FINGERPRINT.match(canonical):
        raise ValueError(
            "expected sha256:<64 hex digits> (the SHA-256 of the DER certificate, "
            "as `agent fingerprint` prints it), got "
            + (f"{len(digits.replace(':', ''))} characters after {prefix}:" if sep else "no prefix")
        )
    return canonical


# --------------------------------------------------------------------------------------------
# Value conversion


class _Bad(Exception):
    """A value that does not fit its field; turned into a ConfigError naming key and origin."""


def _expect(value: Any, ok: bool, expected: str) -> None:
    if not ok:
        raise _Bad(f"expected {expected}, got {json_kind(value)}")


def _str_list(value: Any) -> tuple[str, ...]:
    _expect(value, isinstance(value, list | tuple), "a list of strings")
    for item in value:
        _expect(item, isinstance(item, str), "a list of strings (item)")
    return tuple(value)


def _object(value: Any) -> dict[str, Any]:
    _expect(value, isinstance(value, Mapping), "an object")
    return copy.deepcopy(dict(value))


def _duration(value: Any) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value < 0:
            raise _Bad(f"expected a non-negative duration, got {value}")
        return float(value)
    _expect(value, isinstance(value, str), "a duration string such as 30s, 5m or 1h30m")
    try:
        return parse_duration(value)
    except ConfigError as exc:
        raise _Bad(f"expected a duration such as 30s, 5m or 1h30m, got {value!r}") from exc


def _parse_time(value: Any, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    _expect(value, isinstance(value, str), f"{name} as an RFC 3339 time string")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _Bad(f"expected {name} as an RFC 3339 time, got {value!r}") from exc
    if parsed.tzinfo is None:
        raise _Bad(f"expected {name} as an RFC 3339 time with a zone (Z), got {value!r}")
    return parsed.astimezone(UTC)


def _verify_keys(value: Any) -> tuple[VerifyKeyEntry, ...]:
    if value == "":
        return ()
    if isinstance(value, str):
        value = [value]
    _expect(value, isinstance(value, list | tuple), "a list of verify keys")
    entries: list[VerifyKeyEntry] = []
    for index, item in enumerate(value):
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - {"key", "notBefore", "notAfter"})
            if unknown:
                raise _Bad(
                    f"item {index}: expected keys key, notBefore, notAfter, got {unknown[0]!r}"
                )
            key = item.get("key")
            not_before = _parse_time(item.get("notBefore"), "notBefore")
            not_after = _parse_time(item.get("notAfter"), "notAfter")
        else:
            key, not_before, not_after = item, None, None
        if not isinstance(key, str) or not key:
            raise _Bad(f"expected item {index} to be a key string, got {json_kind(key)}")
        if not_before and not_after and not_before > not_after:
            raise _Bad(f"item {index}: expected notBefore before notAfter")
        from agent.jws.keys import parse_verify_key  # lazy: only when keys are configured

        try:
            parse_verify_key(key)
        except AgentError as exc:
            raise _Bad(f"item {index}: {exc.message}") from exc
        entries.append(VerifyKeyEntry(key, not_before, not_after))
    return tuple(entries)


def _convert(f: _Field, value: Any) -> Any:
    """Check ``value`` against ``f`` and return the typed value (raises _Bad)."""
    kind = f.kind
    if kind in ("str", "regex", "rate", "choice"):
        _expect(value, isinstance(value, str), "a string")
        if kind == "regex":
            try:
                re.compile(value)
            except re.error as exc:
                raise _Bad(f"expected a regular expression, got {value!r} ({exc})") from exc
        if kind == "rate" and not _RATE.match(value):
            raise _Bad(f"expected a rate such as 10-M (<n>-<S|M|H|D>), got {value!r}")
        if kind == "choice" and value not in f.choices:
            raise _Bad(f"expected one of {', '.join(f.choices)}, got {value!r}")
        return value
    if kind == "bool":
        _expect(value, isinstance(value, bool), "a boolean")
        return value
    if kind in ("int", "posint"):
        _expect(value, isinstance(value, int) and not isinstance(value, bool), "an integer")
        minimum = 1 if kind == "posint" else 0
        if value < minimum:
            raise _Bad(f"expected an integer >= {minimum}, got {value}")
        return value
    if kind in ("duration", "duration_opt"):
        return _duration(value)
    if kind == "strlist":
        return _str_list(value)
    if kind == "strmap":
        obj = _object(value)
        for v in obj.values():
            _expect(v, isinstance(v, str), "an object of strings (value)")
        return obj
    if kind == "object":
        return _object(value)
    if kind == "linters":
        # A null entry switches a linter off (e.g. the default shellcheck), as in Etcha.
        obj = {k: v for k, v in _object(value).items() if v is not None}
        for v in obj.values():
            _expect(v, isinstance(v, Mapping), "an object of exec objects (value)")
        return obj
    if kind == "exec":
        return None if value is None else _object(value)
    if kind == "commands":
        _expect(value, isinstance(value, list | tuple), "a list of commands")
        return tuple(copy.deepcopy(list(value)))
    if kind == "verifykeys":
        return _verify_keys(value)
    if kind == "port":
        valid = isinstance(value, str | int) and not isinstance(value, bool)
        _expect(value, valid, "a port (string or integer)")
        text = str(value)
        if not text.isdigit() or not 0 < int(text) < 65536:
            raise _Bad(f"expected a port between 1 and 65535, got {text!r}")
        return text
    if kind == "fingerprint":
        _expect(value, isinstance(value, str), "a string")
        if value == "":
            return ""
        try:
            return parse_fingerprint(value)
        except ValueError as exc:
            raise _Bad(str(exc)) from None
    if kind == "shell":
        if isinstance(value, Mapping):
            return _object(value)
        _expect(value, isinstance(value, str), "a string or an exec object")
        return value
    raise AssertionError(f"unknown field kind {kind}")  # pragma: no cover


def _default(f: _Field) -> Any:
    return f.default() if callable(f.default) else copy.deepcopy(f.default)


def format_go_duration(seconds: float) -> str:
    """Format seconds as a Go duration string that parses back exactly (``300`` → ``"5m"``).

    Args:
        seconds: a non-negative number of seconds.

    Returns:
        ``"0s"`` for zero, otherwise e.g. ``"1h30m"``, ``"1.5s"``, ``"250ms"``.
    """
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 10**9:
        for unit, size in (("ms", 10**6), ("us", 10**3)):
            if ns % size == 0:
                return f"{ns // size}{unit}"
        return f"{ns}ns"
    hours, rem = divmod(ns, 3600 * 10**9)
    minutes, rem = divmod(rem, 60 * 10**9)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    if rem:
        whole, frac = divmod(rem, 10**9)
        out += f"{whole}.{frac:09d}".rstrip("0").rstrip(".") + "s"
    return out


def _to_json(f: _Field, value: Any) -> Any:
    if f.kind == "duration":
        return format_go_duration(value)
    if f.kind == "duration_opt":
        return format_go_duration(value) if value else ""
    if f.kind == "verifykeys":
        out: list[Any] = []
        for entry in value:
            if entry.not_before is None and entry.not_after is None:
                out.append(entry.key)
                continue
            obj: dict[str, Any] = {"key": entry.key}
            if entry.not_before is not None:
                obj["notBefore"] = _format_time(entry.not_before)
            if entry.not_after is not None:
                obj["notAfter"] = _format_time(entry.not_after)
            out.append(obj)
        return out
    if isinstance(value, tuple):
        return copy.deepcopy(list(value))
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return value


def _format_time(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _snake(key: str) -> str:
    s = re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key)
    return re.sub(r"(?<=[A-Z])([A-Z][a-z])", r"_\1", s).lower()


def _record_to_dict(record: Any, fields: Sequence[_Field]) -> dict[str, Any]:
    return {f.key: _to_json(f, getattr(record, _snake(f.key))) for f in fields}


def _field_is_secret(section: str, f: _Field) -> bool:
    """A schema field is masked when listed, or when it is a free string with a secret name.

    Paths to key files (``signingKeyPath``, ``tlsKeyPath``), key ids (``allowedKeys``) and
    values of a public kind (durations such as ``maxTokenAge``, sizes, booleans, verify keys)
    are not secrets, whatever their name.
    """
    if (section, f.key) in _SECRET_PATHS:
        return True
    if f.kind in _PUBLIC_KINDS or f.key.endswith(("Path", "File")) or f.key == "allowedKeys":
        return False
    return _secret_name(f.key)


def _mask_record(value: Any, fields: Sequence[_Field], section: str) -> Any:
    """Mask one typed record (a section, a source or a target) by its schema."""
    if not isinstance(value, dict):
        return _mask(value)
    by_key = {f.key: f for f in fields}
    out: dict[str, Any] = {}
    for key, item in value.items():
        f = by_key.get(key)
        if f is None:
            out[key] = _mask({key: item})[key]
        elif _field_is_secret(section, f):
            out[key] = MASK if item not in ("", None) else item
        elif f.kind in _PUBLIC_KINDS:
            out[key] = item
        elif f.kind in ("strmap", "linters"):  # keys are names (sources, linters), not settings
            out[key] = {k: _mask(v) for k, v in item.items()} if isinstance(item, dict) else item
        elif key in _URL_FIELDS and isinstance(item, list):
            from agent.net.fetch import mask_url

            out[key] = [mask_url(v) if isinstance(v, str) else _mask(v) for v in item]
        else:
            out[key] = _mask(item)
    return out


def _mask(value: Any) -> Any:
    """Mask raw JSON (vars, env, exec, commands): secret-named keys, and URL secrets in strings."""
    if isinstance(value, dict):
        return {
            k: MASK if _secret_name(k) and v not in ("", None) else _mask(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_mask(v) for v in value]
    if isinstance(value, str):
        from agent.net.fetch import mask_urls_in_text

        return mask_urls_in_text(value)
    return value


def _mask_config(data: dict[str, Any]) -> dict[str, Any]:
    """:meth:`Config.to_dict` output with every secret masked (see :meth:`Config.masked_dict`)."""
    out: dict[str, Any] = {}
    for section, value in data.items():
        if section in _SECTIONS:
            out[section] = _mask_record(value, _SECTIONS[section], section)
        elif section == "httpClient":
            out[section] = _mask_record(value, _HTTP_CLIENT, section)
        elif section in _RECORDS and isinstance(value, dict):
            fields = _RECORDS[section]
            out[section] = {n: _mask_record(r, fields, section) for n, r in value.items()}
        else:
            out[section] = _mask(value)
    return out


# --------------------------------------------------------------------------------------------
# Layer normalisation: aliases, ignored keys, schema check


class _Layer:
    """One source of settings being checked; knows how to name itself in messages."""

    def __init__(self, origin: str) -> None:
        self.origin = origin

    def fail(self, path: str, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(f'config key "{path}" in {self.origin}: {message}', hint)

    def unknown(self, path: str, choices: Sequence[str]) -> ConfigError:
        name = path.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(name, list(choices), n=1)
        hint = f'did you mean "{close[0]}"?' if close else None
        return ConfigError(f'unknown config key "{path}" in {self.origin}', hint)

    def warn_ignored(self, path: str) -> None:
        logger.warning('config key "%s" in %s is accepted and ignored', path, self.origin)

    def resolve_alias(
        self,
        data: dict[str, Any],
        candidates: Sequence[tuple[tuple[str, str], bool]],
        canonical: tuple[str, str],
        prefix: str = "",
    ) -> None:
        """Move the winning candidate's value to ``canonical``; the last candidate given wins.

        ``candidates`` are ``((section, key), deprecated)`` in ascending precedence; a section of
        ``""`` means ``data`` itself. Deprecated names always warn; two names with different
        values warn naming the one that lost.
        """
        present: list[tuple[str, Any, bool]] = []
        for (section, key), deprecated in candidates:
            holder = data.get(section) if section else data
            if isinstance(holder, dict) and key in holder:
                name = f"{prefix}{section + '.' if section else ''}{key}"
                present.append((name, holder.pop(key), deprecated))
                if section and not holder:
                    del data[section]
        if not present:
            return
        new = f"{prefix}{canonical[0] + '.' if canonical[0] else ''}{canonical[1]}"
        winner_name, winner, _ = present[-1]
        for name, value, deprecated in present:
            if deprecated:
                logger.warning(
                    'config key "%s" in %s is an old name; use "%s"', name, self.origin, new
                )
            if name != winner_name and value != winner:
                logger.warning(
                    'config keys "%s" and "%s" both set in %s; "%s" wins',
                    name,
                    winner_name,
                    self.origin,
                    winner_name,
                )
        section, key = canonical
        holder = data.setdefault(section, {}) if section else data
        if not isinstance(holder, dict):
            raise self.fail(section, f"expected an object, got {json_kind(holder)}")
        holder[key] = winner


def _check_record(layer: _Layer, data: Any, fields: Sequence[_Field], path: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise layer.fail(path, f"expected an object, got {json_kind(data)}")
    by_key = {f.key: f for f in fields}
    for key, value in data.items():
        f = by_key.get(key)
        if f is None:
            raise layer.unknown(f"{path}.{key}", list(by_key))
        if value is None:
            continue
        try:
            _convert(f, value)
        except _Bad as exc:
            raise layer.fail(f"{path}.{key}", str(exc)) from None
    return dict(data)


def _normalize(data: Any, origin: str) -> dict[str, Any]:
    """Check one layer and return it with aliases resolved and ignored keys dropped.

    Raises:
        ConfigError: unknown key, wrong type, bad value or an unsupported key such as jwtRule.
    """
    layer = _Layer(origin)
    if not isinstance(data, Mapping):
        raise ConfigError(f"config in {origin}: expected an object, got {json_kind(data)}")
    d: dict[str, Any] = _plain(data, layer, "")
    # Sections given as null are "not given".
    for key in [k for k, v in d.items() if v is None and k not in _RECORDS]:
        del d[key]
    for key in _IGNORED_TOP:
        if key in d:
            layer.warn_ignored(key)
            del d[key]
    if "jsonnet" in d:
        section = d.pop("jsonnet")
        if not isinstance(section, Mapping):
            raise layer.fail("jsonnet", f"expected an object, got {json_kind(section)}")
        for key in section:
            layer.warn_ignored(f"jsonnet.{key}")
    for section in ("run", "http", "httpServer", "build", "httpClient", "cli"):
        if section in d and not isinstance(d[section], dict):
            raise layer.fail(section, f"expected an object, got {json_kind(d[section])}")
    for key in _LISTENER_KEYS:
        layer.resolve_alias(
            d,
            [(("run", key), False), (("http", key), True), (("httpServer", key), False)],
            ("run", key),
        )
    layer.resolve_alias(
        d, [(("build", "caFile"), False), (("httpClient", "caFile"), False)], ("build", "caFile")
    )
    layer.resolve_alias(
        d,
        [
            (("build", "pushTLSSkipVerify"), True),
            (("build", "tlsSkipVerify"), False),
            (("httpClient", "tlsSkipVerify"), False),
        ],
        ("build", "tlsSkipVerify"),
    )
    if isinstance(d.get("build"), dict) and "pushTargets" in d["build"]:
        _push_targets(layer, d)
    for name in ("Metrics", "Pprof"):
        layer.resolve_alias(
            d,
            [(("run", f"system{name}Secret"), True), (("run", f"system{name}Key"), False)],
            ("run", f"system{name}Key"),
        )
    for section, keys in _IGNORED.items():
        for key in keys:
            if isinstance(d.get(section), dict) and key in d[section]:
                layer.warn_ignored(f"{section}.{key}")
                del d[section][key]
    if isinstance(d.get("run"), dict) and "jwtRule" in d["run"]:
        raise _jwt_rule_error(layer, "run.jwtRule")
    for section in ("http", "httpServer"):
        if section in d:
            rest = d.pop(section)
            if rest:
                raise layer.unknown(f"{section}.{next(iter(rest))}", _LISTENER_KEYS)
    for key, value in list(d.items()):
        if key in _SECTIONS:
            _check_record(layer, value, _SECTIONS[key], key)
        elif key == "httpClient":
            _check_record(layer, value, _HTTP_CLIENT, key)
        elif key in _RAW_SECTIONS:
            if not isinstance(value, dict):
                raise layer.fail(key, f"expected an object, got {json_kind(value)}")
        elif key in _RECORDS:
            _normalize_records(layer, d, key)
        else:
            choices = [*_SECTIONS, *_RECORDS, *_RAW_SECTIONS, "httpClient", "httpServer"]
            raise layer.unknown(key, choices)
    return d


def _push_targets(layer: _Layer, d: dict[str, Any]) -> None:
    """Turn Etcha's old ``build.pushTargets`` into ``targets`` (a name in ``targets`` wins).

    ``{name: {hostname, insecure, path, port, sources: [...], vars}}`` becomes ``targets.<name>``
    with ``pathPush: path`` and ``sourcePatterns: {source: ""}`` for each listed source, so a push
    of a listed source goes to the target with the pattern or command given on the command line.
    """
    build = d["build"]
    old = build.pop("pushTargets")
    if not build:
        del d["build"]
    logger.warning(
        'config key "build.pushTargets" in %s is an old name; use "targets"', layer.origin
    )
    if old is None:
        return
    if not isinstance(old, dict):
        raise layer.fail("build.pushTargets", f"expected an object, got {json_kind(old)}")
    targets = d.setdefault("targets", {})
    if targets is None:
        targets = d["targets"] = {}
    if not isinstance(targets, dict):
        return  # _normalize_records reports it
    for name, record in old.items():
        path = f"build.pushTargets.{name}"
        if record is None:
            continue
        rec = _check_record(layer, record, _PUSH_TARGET, path)
        new: dict[str, Any] = {}
        for key in ("hostname", "insecure", "port", "vars"):
            if rec.get(key) is not None:
                new[key] = rec[key]
        if rec.get("path"):
            new["pathPush"] = rec["path"]
        new["sourcePatterns"] = {source: "" for source in rec.get("sources") or ()}
        if name in targets:
            logger.warning(
                'config keys "%s" and "targets.%s" both set in %s; "targets.%s" wins',
                path,
                name,
                layer.origin,
                name,
            )
            continue
        targets[name] = new


def _normalize_records(layer: _Layer, d: dict[str, Any], section: str) -> None:
    records = d[section]
    if records is None:
        del d[section]
        return
    if not isinstance(records, dict):
        raise layer.fail(section, f"expected an object, got {json_kind(records)}")
    for name, record in records.items():
        path = f"{section}.{name}"
        if record is None:
            continue
        if not isinstance(record, dict):
            raise layer.fail(path, f"expected an object, got {json_kind(record)}")
        if section == "sources":
            if "jwtRule" in record:
                raise _jwt_rule_error(layer, f"{path}.jwtRule")
            for key in _IGNORED_SOURCE:
                if key in record:
                    layer.warn_ignored(f"{path}.{key}")
                    del record[key]
            layer.resolve_alias(
                record,
                [(("", "runFrequencySec"), True), (("", "runFrequency"), False)],
                ("", "runFrequency"),
                prefix=f"{path}.",
            )
        else:
            layer.resolve_alias(
                record, [(("", "string"), True), (("", "port"), False)], ("", "port"), f"{path}."
            )
        _check_record(layer, record, _RECORDS[section], path)


def _jwt_rule_error(layer: _Layer, path: str) -> ConfigError:
    return layer.fail(path, "not supported; a security rule is never silently ignored")


def _plain(value: Any, layer: _Layer, path: str) -> Any:
    """Deep-copy ``value`` into plain dicts/lists with string keys (YAML may give other keys)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, int | float) and not isinstance(k, bool):
                k = str(k)
            if not isinstance(k, str):
                where = path or "config"
                raise layer.fail(where, f"expected string keys, got {json_kind(k)}")
            out[k] = _plain(v, layer, f"{path}.{k}" if path else k)
        return out
    if isinstance(value, list | tuple):
        return [_plain(v, layer, path) for v in value]
    if isinstance(value, datetime):
        return _format_time(value) if value.tzinfo else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return value


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """Objects merge key-by-key; everything else (lists, scalars, null) replaces."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


# --------------------------------------------------------------------------------------------
# Building the typed tree


def _defaults() -> dict[str, Any]:
    out: dict[str, Any] = {s: {f.key: _default(f) for f in fs} for s, fs in _SECTIONS.items()}
    for key, (default, _) in _RAW_SECTIONS.items():
        out[key] = copy.deepcopy(default)
    out["httpClient"] = {f.key: _default(f) for f in _HTTP_CLIENT}
    out["sources"] = {}
    out["targets"] = {}
    return out


def _build_record(
    cls: Callable[..., Any], fields: Sequence[_Field], data: Mapping[str, Any], **extra: Any
) -> Any:
    kwargs: dict[str, Any] = dict(extra)
    for f in fields:
        value = data.get(f.key)
        kwargs[_snake(f.key)] = _convert(f, _default(f) if value is None else value)
    return cls(**kwargs)


def config_from_dict(
    data: Mapping[str, Any], *, cwd: Path | None = None, origin: str = "config"
) -> Config:
    """Build a :class:`Config` from one camelCase mapping merged onto the defaults.

    Args:
        data: config keys as in a config file (aliases accepted).
        cwd: directory a relative ``run.stateDir`` is resolved against (default: the cwd).
        origin: how ``data`` is named in error messages.

    Raises:
        ConfigError: unknown key, wrong type or bad value.

    Returns:
        The frozen config.
    """
    merged = _merge(_defaults(), _normalize(data, origin))
    base = Path.cwd() if cwd is None else cwd
    layer = _Layer(origin)
    try:
        build = _build_record(BuildConfig, _BUILD, merged["build"])
        run = _build_record(RunConfig, _RUN, merged["run"])
        state_dir = run.state_dir
        resolved = os.path.normpath(os.path.join(base, state_dir)) if state_dir else str(base)
        run = replace(run, state_dir=resolved)
        sources = {
            name: _build_record(SourceConfig, _SOURCE, rec, name=name)
            for name, rec in sorted(merged["sources"].items())
            if rec is not None
        }
        targets = {}
        for name, rec in sorted(merged["targets"].items()):
            if rec is None:
                continue
            if not rec.get("hostname"):
                rec = {**rec, "hostname": name}
            target = _build_record(TargetConfig, _TARGET, rec, name=name)
            if target.fingerprint and target.insecure:
                raise layer.fail(
                    f"targets.{name}.fingerprint",
                    "expected an https target to pin a certificate, got insecure: true",
                )
            targets[name] = target
        client = merged["httpClient"]
        return Config(
            build=build,
            cli=_build_record(CLIConfig, _CLI, merged["cli"]),
            exec=dict(merged["exec"]),
            http_client=HTTPClientConfig(
                ca_file=build.ca_file,
                no_system_ca=bool(client.get("noSystemCA")),
                tls_skip_verify=build.tls_skip_verify,
                follow_cross_origin_redirects=bool(client.get("followCrossOriginRedirects")),
            ),
            lint=_build_record(LintConfig, _LINT, merged["lint"]),
            run=run,
            sources=sources,
            targets=targets,
            vars=dict(merged["vars"]),
        )
    except _Bad as exc:  # pragma: no cover - every value was checked by _normalize
        raise layer.fail("config", str(exc)) from None


# --------------------------------------------------------------------------------------------
# Loading


def find_config_file(cwd: Path) -> Path | None:
    """The nearest config file from ``cwd`` upward (see :data:`CONFIG_FILE_NAMES`), or None."""
    for directory in (cwd, *cwd.parents):
        for name in CONFIG_FILE_NAMES:
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def _import_callback(directory: str, rel: str) -> tuple[str, bytes]:
    full = os.path.normpath(os.path.join(directory, rel))
    try:
        with open(full, "rb") as fh:
            return full, fh.read()
    except OSError as exc:
        raise RuntimeError(f"cannot import {rel}: {exc.strerror}") from exc


def _evaluate_jsonnet(text: str, filename: str) -> Any:
    from agent.jsonnet.engine import evaluate_text

    try:
        return evaluate_text(text, filename, import_callback=_import_callback)
    except AgentError as exc:
        raise ConfigError(exc.message) from exc


def read_config_file(path: Path) -> Any:
    """Read and evaluate one config file: YAML by extension, otherwise Jsonnet (JSON included).

    Raises:
        ConfigError: unreadable file, YAML or Jsonnet error.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8"
        raise ConfigError(f"config file {path}: expected a readable file, got {reason}") from exc
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"config file {path}: expected YAML, got {problem}{where}") from exc
        return {} if data is None else data
    return _evaluate_jsonnet(text, str(path))


def parse_override_value(text: str) -> Any:
    """Type an override value the way Etcha does (reference §6.1).

    Go ``Atoi`` integers (``+5``, ``-3``, ``007``) become ints, ``true``/``false`` booleans,
    text starting with ``[`` or ``{`` is JSON, ``null`` is None, anything else a string.

    Raises:
        ConfigError: text starting with ``[``/``{`` that is not JSON.
    """
    if _INT.match(text) and -_INT64 <= int(text) < _INT64:
        return int(text)
    if text in ("true", "false"):
        return text == "true"
    if text == "null":
        return None
    if text.startswith(("[", "{")):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"expected JSON, got invalid JSON ({exc.msg})") from exc
    return text


def _override_layer(key: str, value: str, origin: str) -> Any:
    if not key:
        raise ConfigError(f"{origin}: expected KEY=VALUE with a non-empty KEY")
    if key == "config":
        return _evaluate_jsonnet(value, origin)
    try:
        typed = parse_override_value(value)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc.message}") from None
    parts = key.split("_")
    layer: dict[str, Any] = {}
    node = layer
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = typed
    return layer


def load_config(
    *,
    path: str | None,
    overrides: Sequence[str] = (),
    environ: Mapping[str, str],
    cwd: Path,
) -> Config:
    """Load the effective config; each step overrides the one before.

    1. defaults; 2. the config file (``path``, else the nearest of :data:`CONFIG_FILE_NAMES` from
    ``cwd`` upward; none found means defaults); 3. ``AGENT_CONFIG`` (Jsonnet); 4. ``AGENT_<path>``
    variables whose name has a lowercase letter, in name order; 5. ``overrides`` (``path=value``,
    ``config=<jsonnet>``), in order.

    Args:
        path: explicit config file (``-c``); it must exist.
        overrides: ``-x`` arguments.
        environ: the environment to read ``AGENT_*`` from (never modified).
        cwd: where the search starts and what a relative ``run.stateDir`` is resolved against.

    Raises:
        ConfigError: missing explicit file, unreadable file, bad key or value in any layer.

    Returns:
        The frozen config.
    """
    merged: dict[str, Any] = {}
    file_path: Path | None
    if path is not None:
        file_path = Path(path) if os.path.isabs(path) else cwd / path
        if not file_path.is_file():
            raise ConfigError(f"config file {path}: expected an existing file, got none")
    else:
        file_path = find_config_file(cwd)
    if file_path is not None:
        logger.debug("loading config file %s", file_path)
        merged = _merge(merged, _normalize(read_config_file(file_path), str(file_path)))
    text = environ.get(f"{ENV_PREFIX}CONFIG")
    if text:
        origin = f"env {ENV_PREFIX}CONFIG"
        merged = _merge(merged, _normalize(_evaluate_jsonnet(text, origin), origin))
    for name in sorted(environ):
        key = name[len(ENV_PREFIX) :]
        if not name.startswith(ENV_PREFIX) or not any(c.islower() for c in key):
            continue
        origin = f"env {name}"
        merged = _merge(merged, _normalize(_override_layer(key, environ[name], origin), origin))
    for item in overrides:
        key, sep, value = item.partition("=")
        origin = f"override -x {key}"
        if not sep:
            raise ConfigError('override -x: expected KEY=VALUE, got no "="')
        merged = _merge(merged, _normalize(_override_layer(key, value, origin), origin))
    return config_from_dict(merged, cwd=cwd, origin="merged config")


# --------------------------------------------------------------------------------------------
# Generated reference


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _default_doc(f: _Field) -> str:
    if f.default_doc:
        return f.default_doc
    return f"`{json.dumps(f.default, sort_keys=True)}`"


def _table(fields: Sequence[_Field], prefix: str) -> list[str]:
    lines = ["| key | type | default | description |", "|---|---|---|---|"]
    for f in fields:
        kind = _KIND_DOC[f.kind]
        if f.choices:
            kind += f" ({', '.join(f.choices)})"
        lines.append(f"| `{prefix}{f.key}` | {kind} | {_cell(_default_doc(f))} | {_cell(f.doc)} |")
    return lines


def _secret_field_names() -> list[str]:
    """Every schema field :meth:`Config.masked_dict` masks, as ``section.key`` paths."""
    groups = [*_SECTIONS.items(), ("httpClient", _HTTP_CLIENT)]
    names = [f"{s}.{f.key}" for s, fields in groups for f in fields if _field_is_secret(s, f)]
    names += [f"{s}.*.{f.key}" for s, fs in _RECORDS.items() for f in fs if _field_is_secret(s, f)]
    return names


def render_reference() -> str:
    """The markdown of ``docs/configuration.md``, generated from the schema in this module."""
    out = [
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
        "Durations are Go duration strings (`30s`, `5m`, `1h30m`) or numbers of seconds.",
        "`run.stateDir` is made absolute against the current directory.",
        "",
    ]
    for section, fields in _SECTIONS.items():
        out += [f"## `{section}`", "", *_table(fields, f"{section}."), ""]
    out += ["## `httpClient`", "", *_table(_HTTP_CLIENT, "httpClient."), ""]
    out += [
        "`httpClient.tlsSkipVerify` and `httpClient.caFile` are the same settings as "
        "`build.tlsSkipVerify` and `build.caFile`; they apply to pull, push and `getFile`.",
        "",
    ]
    for key, (default, doc) in _RAW_SECTIONS.items():
        out += [
            f"## `{key}`",
            "",
            f"{doc} Default: `{json.dumps(default, sort_keys=True)}`.",
            "",
        ]
    out += ["## `sources.<name>`", "", *_table(_SOURCE, ""), ""]
    out += ["## `targets.<name>`", "", *_table(_TARGET, ""), ""]
    out += [
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
    for key in _LISTENER_KEYS:
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
    ignored = [*_IGNORED_TOP, *(f"{s}.{k}" for s, ks in _IGNORED.items() for k in ks)]
    ignored += [f"sources.*.{k}" for k in _IGNORED_SOURCE]
    ignored.append("jsonnet.*")
    out += [f"- `{name}`" for name in ignored]
    out += [
        "",
        "## Errors",
        "",
        "- `run.jwtRule` and `sources.*.jwtRule` are not supported yet and are errors: "
        "a security rule is never silently ignored.",
        "",
        "## Secrets in `show-config`",
        "",
        f"`agent show-config` prints the effective config with these values replaced by `{MASK}`:",
        "",
        "- " + ", ".join(f"`{p}`" for p in _secret_field_names()) + ".",
        "- Every key anywhere in `vars`, `exec` (its `env` too), commands and the other "
        "free-form objects whose name contains "
        + ", ".join(f"`{w}`" for w in _SECRET_WORDS)
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
    return "\n".join(out)


def _main(argv: Sequence[str]) -> int:
    target = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "docs"
    if target.is_dir():
        target = target / "configuration.md"
    target.write_text(render_reference(), encoding="utf-8")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    import sys

    raise SystemExit(_main(sys.argv[1:]))
