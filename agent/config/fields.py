"""The config schema as data: every section's fields, kinds, defaults and documentation.

Responsibility: the single source of truth the other modules of :mod:`agent.config` read.
Loading (:mod:`agent.config.layers`), typing (:mod:`agent.config.values`), ``to_dict``
(:mod:`agent.config.tree`), masking (:mod:`agent.config.masking`) and the generated reference
(:mod:`agent.config.reference`) all walk these tables.

Invariants:

- A field's ``kind`` names one conversion in :func:`agent.config.values.convert`.
- Defaults are JSON values (or a callable giving one); :func:`default_value` copies them, so no
  caller can change a table.
- Nothing here is mutable at run time and nothing here imports beyond the core layer.
"""

from __future__ import annotations

import copy
import os

from agent.core.limits import DEFAULT_MAX_TOKEN_BYTES

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Final


class Field:
    """One config key: its camelCase name, kind, default and one line of documentation.

    Schema metadata, not config: a plain slotted class (its attributes ``Final`` for mypy), as
    creating a frozen dataclass costs every command's start-up about half a millisecond (issue
    14) and the tables hold about two hundred of them.
    """

    __slots__ = ("choices", "default", "default_doc", "doc", "key", "kind")

    def __init__(
        self,
        key: str,
        kind: str,
        default: Any,
        doc: str,
        default_doc: str = "",
        choices: tuple[str, ...] = (),
    ) -> None:
        self.key: Final = key
        self.kind: Final = kind
        self.default: Final = default
        self.doc: Final = doc
        self.default_doc: Final = default_doc
        self.choices: Final = choices

    def __repr__(self) -> str:
        return (
            f"Field(key={self.key!r}, kind={self.kind!r}, default={self.default!r}, "
            f"doc={self.doc!r}, default_doc={self.default_doc!r}, choices={self.choices!r})"
        )


#: The actions scopes and delegations grant (``agent.trust.gate.Action``; a test keeps them equal).
ACTION_NAMES = ("push", "pull", "check", "shell", "delegate")


def _cpu_count() -> int:
    return os.cpu_count() or 1


DEFAULT_EXEC_JSON: dict[str, Any] = {
    "allowOverride": True,
    "command": "/usr/bin/bash -e -o pipefail -c",
    "envInherit": True,
}
DEFAULT_LINTERS: dict[str, Any] = {
    "shellcheck": {"command": "shellcheck -s bash -e 2016 -e 2154 -"}
}

BUILD = (
    Field("caFile", "str", "", "PEM file of extra CA certificates trusted by the push client."),
    Field(
        "delegationChain",
        "strlist",
        [],
        "Delegation JWTs (or files holding them), root first: `build` and `push` put them in the "
        "token header as `etchaChain` (docs/security.md).",
    ),
    Field("pushDomainSuffix", "str", "", "Suffix appended to target host names when pushing."),
    Field(
        "pushMaxWorkers",
        "posint",
        _cpu_count,
        "Targets pushed to at the same time.",
        default_doc="number of CPUs",
    ),
    Field("pushTimeout", "duration", "2m", "Time limit per target of `agent push` (--timeout)."),
    Field("pushTokenExpiresIn", "duration", "5m", "Lifetime of the JWTs `agent push` signs."),
    Field(
        "scope",
        "scope",
        {},
        "`{sources: [...], actions: [...]}`: the token narrows itself (claim `etchaScope`).",
    ),
    Field("signingCommands", "commands", [], "Commands whose `jwt` event signs (wins over keys)."),
    Field("signingExec", "exec", None, "Exec for signingCommands (overrides `exec`)."),
    Field("signingKey", "str", "", "Private key string used to sign JWTs (secret)."),
    Field("signingKeyPath", "str", "", "File holding the private key string."),
    Field("tlsSkipVerify", "bool", False, "Skip TLS verification in the push/pull client."),
)
CLI = (
    Field(
        "disableExternalNative", "bool", False, "Disable Jsonnet natives that reach out (as -d)."
    ),
    Field("logFormat", "choice", "human", "Log format.", choices=("human", "json")),
    Field("logLevel", "choice", "info", "Log level.", choices=("debug", "info", "error", "none")),
    Field("noColor", "bool", False, "No colour in output."),
)
HTTP_CLIENT = (
    Field(
        "followCrossOriginRedirects",
        "bool",
        False,
        "Pulls follow a redirect to another origin, without the custom `#Header:` headers and "
        "URL user info (default: refused; same-origin redirects are always followed).",
    ),
    Field("noSystemCA", "bool", False, "Trust only `caFile`, not the system CA store."),
)
LINT = (
    Field(
        "exclude",
        "regex",
        "etcha.jsonnet|agent.jsonnet",
        "Files `agent lint` skips (regexp).",
    ),
    Field(
        "linters",
        "linters",
        DEFAULT_LINTERS,
        "Name -> exec running a linter on stdin; null switches a linter off.",
    ),
)
RUN = (
    Field(
        "audit",
        "bool",
        True,
        "Keep the tamper-evident audit log `<stateDir>/audit/audit.jsonl` (docs/security.md).",
    ),
    Field(
        "auditCheckpointEvery",
        "posint",
        100,
        "Entries between two signed checkpoint lines of the audit log (one more at stop).",
    ),
    Field(
        "auditJournal",
        "bool",
        False,
        "Also send each audit entry to journald as structured fields (native protocol).",
    ),
    Field("auditKeep", "posint", 8, "Audit log files kept, the current one included."),
    Field("auditMaxBytes", "posint", 64 * 1024 * 1024, "Size at which the audit log rotates."),
    Field(
        "auditSigningKey",
        "str",
        "",
        "Ed25519 private key string signing audit checkpoints (secret; default: "
        "`<stateDir>/audit.key`, generated once).",
    ),
    Field(
        "diffRedact",
        "strlist",
        [],
        "Path globs whose contents `--diff` shows as `(content hidden)` (as do files of mode "
        "0600 or stricter).",
    ),
    Field(
        "inProcessEtcha",
        "bool",
        False,
        "Also run `etcha file|dir|copy|line|link ...` commands (patterns built with Etcha's "
        "library) inside the agent, as `inProcessHelpers` does for `agent ...` ones.",
    ),
    Field(
        "inProcessHelpers",
        "bool",
        True,
        "Run a command whose script is exactly one `agent file|dir|copy|line|link ...` "
        "invocation inside the agent instead of a new process, under the default exec only "
        "(same exit code, output and file effects; see docs/patterns.md).",
    ),
    Field(
        "keepaliveTimeout",
        "duration",
        "15s",
        "Idle time after which a kept-alive connection closes.",
    ),
    Field(
        "jwtRule",
        "jwtrule",
        "",
        "CEL expression over `claims` and `header` every token must satisfy (see #jwtrule).",
    ),
    Field("listenAddress", "str", ":4000", "Address the push/webhook listener binds."),
    Field(
        "maxBodyBytes", "posint", 4 * 1024 * 1024, "Largest webhook request body accepted (413)."
    ),
    Field(
        "maxConnections",
        "posint",
        256,
        "Open listener connections in all (clamped below the file-descriptor limit).",
    ),
    Field("maxConnectionsPerAddress", "posint", 32, "Open listener connections per client."),
    Field("maxChainDepth", "posint", 3, "Most links accepted in a token's `etchaChain`."),
    Field(
        "maxTokenBytes",
        "posint",
        DEFAULT_MAX_TOKEN_BYTES,
        "Largest JWT accepted: push bodies (413), pulled and verified tokens.",
    ),
    Field(
        "persistentShell",
        "bool",
        True,
        "Run scripts under the default `bash -c` exec in one long-lived bash per run, which "
        "forks a subshell per script, instead of a new process each (see docs/patterns.md).",
    ),
    Field("pushRequireExp", "bool", False, "Reject pushed JWTs without an `exp` claim."),
    Field("pushRequireJti", "bool", False, "Reject pushed JWTs without a `jti` claim."),
    Field("randomizedStartDelaySec", "int", 0, "Random delay (seconds) before the first runs."),
    Field(
        "revocationFrequency",
        "duration",
        "5m",
        "How often `revocationPaths` are pulled again.",
    ),
    Field(
        "revocationPaths",
        "strlist",
        [],
        "Files or URLs of revocation lists (`agent revoke`) signed by a trust root.",
    ),
    Field(
        "revocations",
        "revocations",
        [],
        "`[{key, before}]`: tokens signed by `key` (id or public key) issued before are refused.",
    ),
    Field(
        "rateLimiterRate", "rate", "10-M", "Failed requests allowed per client, `<n>-<S|M|H|D>`."
    ),
    Field(
        "shellMaxSessions",
        "posint",
        4,
        "Open `agent shell` sessions per source (429 beyond).",
    ),
    Field("stateDir", "str", "", "Directory for `<source>.jwt` state.", default_doc="cwd"),
    Field("systemMetricsKey", "str", "", "`?key=` enabling /etcha/v1/system/metrics (secret)."),
    Field("systemPprofKey", "str", "", "`?key=` enabling /etcha/v1/system/pprof (secret)."),
    Field("timeoutBody", "duration", "30s", "Time limit for reading a request body."),
    Field("timeoutHeaders", "duration", "10s", "Time limit for a request line and its headers."),
    Field("timeoutPush", "duration", "10m", "Time limit of a push run."),
    Field(
        "timeoutShell",
        "duration",
        "10m",
        "Idle time (no input and no output) after which a shell session is closed.",
    ),
    Field("timeoutWebhook", "duration", "10m", "Time limit of a webhook run."),
    Field("tlsCertificateBase64", "str", "", "Listener certificate, base64 PEM."),
    Field("tlsCertificatePath", "str", "", "Listener certificate file."),
    Field("tlsDisable", "bool", False, "Serve plain HTTP (behind a TLS proxy)."),
    Field("tlsKeyBase64", "str", "", "Listener private key, base64 PEM (secret)."),
    Field("tlsKeyPath", "str", "", "Listener private key file."),
    Field(
        "trustRoots",
        "trustroots",
        [],
        "Root keys that sign delegations (never patterns) for every source.",
    ),
    Field("verifyCommands", "commands", [], "Commands whose `jwt` event verifies tokens."),
    Field("verifyExec", "exec", None, "Exec for verifyCommands."),
    Field("verifyKeys", "verifykeys", [], "Public keys tried, in order, for every source."),
    Field("webhookMaxConcurrent", "posint", 4, "Webhook runs at once per source (429 beyond)."),
)
PUBLISH = (
    Field(
        "artifacts",
        "artifacts",
        {},
        "Artifact name -> `{pattern, dest, expiresIn, resignBefore}` that `agent publish` keeps "
        "fresh: `dest` lists file paths or http(s) URLs; `expiresIn` is required and "
        "`resignBefore` (default a quarter of it) must be shorter.",
    ),
    Field("checkFrequency", "duration", "1m", "How often `agent publish` checks (jittered)."),
    Field("fileMode", "filemode", "0644", "Mode of published files, an octal string."),
    Field(
        "metricsAddress",
        "str",
        "",
        "`host:port` where `agent publish` serves /etcha/v1/system/metrics (empty: none).",
    ),
)
SOURCE = (
    Field("allowNATS", "bool", False, "Accept pushes over NATS (needs the `nats` section)."),
    Field("allowPush", "bool", False, "Accept pushed JWTs."),
    Field("allowRollback", "bool", False, "Accept a JWT older than the current one."),
    Field("allowedKeys", "strlist", [], "Key ids allowed to sign for this source (empty: any)."),
    Field(
        "checkOnly",
        "bool",
        False,
        "Only run checks (drift is reported), never changes; saves no state.",
    ),
    Field("commands", "commands", [], "Static commands run when no pattern is set."),
    Field("eventsReceive", "strlist", [], "Event names that trigger this source."),
    Field("eventsReceiveExit", "bool", False, "Exit the daemon when an event is received."),
    Field("eventsSend", "regex", "", "Regexp of event names this source may send."),
    Field("exec", "exec", None, "Exec overriding the top-level `exec`."),
    Field("jwtRule", "jwtrule", "", "CEL rule for this source's tokens, after `run.jwtRule`."),
    Field("maxTokenAge", "duration_opt", "", "Reject JWTs issued longer ago (empty: off)."),
    Field("noRemove", "bool", False, "Never run remove scripts in diff-runs."),
    Field("noRestore", "bool", False, "Do not restore the state JWT at start-up."),
    Field("pullIgnoreVersion", "bool", False, "Do not re-run when only etchaVersion changed."),
    Field("pullPaths", "strlist", [], "Paths or URLs a JWT is pulled from."),
    Field(
        "requireExp",
        "bool",
        False,
        "Refuse pushed or pulled JWTs without an `exp` claim (reason `missing_exp`).",
    ),
    Field("runFrequency", "duration_opt", "", "How often to pull and run (empty: never)."),
    Field("runMulti", "bool", False, "Allow concurrent runs of this source."),
    Field(
        "shell",
        "shell",
        "",
        "Command (or exec object with a `command`) run under a pty for `agent shell` "
        "sessions; empty: no shell (404).",
    ),
    Field("triggerOnly", "bool", False, "Run only when triggered (event, webhook, push)."),
    Field("trustRoots", "trustroots", [], "Root keys tried after `run.trustRoots`."),
    Field("verifyCommands", "commands", [], "Commands whose `jwt` event verifies tokens."),
    Field("verifyExec", "exec", None, "Exec for verifyCommands."),
    Field("verifyKeys", "verifykeys", [], "Public keys tried after `run.verifyKeys`."),
    Field("vars", "object", {}, "Variables merged over the top-level `vars`."),
    Field("webhookPaths", "strlist", [], "HTTP paths that run this source."),
)
#: ``nats``: the fleet transport (docs/scaling.md); off while ``servers`` is empty.
NATS = (
    Field("credsFile", "str", "", "NATS credentials file (user JWT and nkey seed)."),
    Field(
        "hostname",
        "str",
        "",
        "Host name in this host's NATS subjects and replies.",
        default_doc="vars.sysinfo.hostname",
    ),
    Field("nkeySeedFile", "str", "", "NATS nkey seed file (nkey authentication)."),
    Field("password", "str", "", "NATS password, with `user` (secret)."),
    Field("servers", "strlist", [], "NATS server URLs, `nats://host:4222` or `tls://host:4222`."),
    Field("stream", "str", "ETCHA", "JetStream stream keeping the last push per subject."),
    Field("subjectPrefix", "str", "etcha", "First token of every subject."),
    Field("tls", "natstls", {}, "TLS to the NATS servers: `{caFile, certFile, keyFile}`."),
    Field("token", "str", "", "NATS authentication token (secret)."),
    Field("user", "str", "", "NATS user name, with `password`."),
)
TARGET = (
    Field(
        "fingerprint",
        "fingerprint",
        "",
        "Pin the target's certificate: `sha256:<hex>` of its DER certificate, as "
        "`agent fingerprint` prints it. Needs neither a CA nor tlsSkipVerify.",
    ),
    Field("hostname", "str", "", "Host pushed to.", default_doc="the target name"),
    Field("insecure", "bool", False, "Use http instead of https."),
    Field("pathPush", "str", "/etcha/v1/push", "Push path prefix."),
    Field("pathShell", "str", "/etcha/v1/shell", "Shell path prefix."),
    Field("port", "port", "4000", "Port (string or integer)."),
    Field("sourcePatterns", "strmap", {}, "Source name -> pattern path or command to push."),
    Field("vars", "object", {}, "Variables added to the pushed JWT's run vars."),
)

#: Sections made of typed fields.
SECTIONS: dict[str, tuple[Field, ...]] = {
    "build": BUILD,
    "cli": CLI,
    "lint": LINT,
    "publish": PUBLISH,
    "nats": NATS,
    "run": RUN,
}
#: Sections that map names to typed records.
RECORDS: dict[str, tuple[Field, ...]] = {"sources": SOURCE, "targets": TARGET}
#: Sections that are raw JSON objects.
RAW_SECTIONS: dict[str, tuple[dict[str, Any], str]] = {
    "exec": (DEFAULT_EXEC_JSON, "Default exec for every command (parsed by agent.run.model)."),
    "vars": ({}, "Variables for every pattern (`vars.sysinfo` etc. are added at render time)."),
}
LISTENER_KEYS = (
    "listenAddress",
    "rateLimiterRate",
    "tlsCertificateBase64",
    "tlsCertificatePath",
    "tlsKeyBase64",
    "tlsKeyPath",
)
IGNORED_TOP = ("license", "licenseKey")
IGNORED: dict[str, tuple[str, ...]] = {
    "cli": ("configPath", "macros"),
    "run": ("commandsMaxWorkers",),
}
IGNORED_SOURCE = ("runAll",)

KIND_DOC = {
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
    "trustroots": "list of verify keys",
    "revocations": "list of {key, before}",
    "scope": "object",
    "jwtrule": "CEL expression",
    "commands": "list of commands",
    "exec": "exec object",
    "object": "object",
    "linters": "object of exec objects",
    "port": "string or integer",
    "shell": "string or exec object",
    "fingerprint": "string",
    "artifacts": "object of artifacts",
    "filemode": "octal string",
    "natstls": "object of file paths",
}
#: ``build.pushTargets.<name>``: Etcha's old form of ``targets`` (SPEC 18).
PUSH_TARGET = (
    Field("hostname", "str", "", ""),
    Field("insecure", "bool", False, ""),
    Field("path", "str", "", ""),
    Field("port", "port", "4000", ""),
    Field("sources", "strlist", [], ""),
    Field("vars", "object", {}, ""),
)
#: Field kinds parsed into the run model (:class:`agent.run.model.Command` / ``Exec``); the
#: JSON as written is kept beside the typed value for ``to_dict`` and ``show-config``.
TYPED_JSON_KINDS = frozenset({"commands", "exec", "shell"})
#: The top-level ``exec`` section, checked and typed like an ``exec`` field.
EXEC_SECTION = Field("exec", "exec", DEFAULT_EXEC_JSON, RAW_SECTIONS["exec"][1])


def default_value(f: Field) -> Any:
    """A fresh copy of the default of ``f``."""
    return f.default() if callable(f.default) else copy.deepcopy(f.default)


_UPPER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER = frozenset("abcdefghijklmnopqrstuvwxyz")
_LOWER_DIGIT = _LOWER | frozenset("0123456789")


def snake(key: str) -> str:
    """The attribute name of a camelCase key (``noSystemCA`` -> ``no_system_ca``).

    An ``_`` goes before an (ASCII) capital that follows a lowercase letter or a digit, then
    before a capital that follows a capital and precedes a lowercase letter; the result is
    lowercased. (The two ``re.sub`` passes this replaces, without their compiles and ~150 calls
    per config load: start-up, issue 14.)
    """
    first: list[str] = []
    for i, ch in enumerate(key):
        if ch in _UPPER and i and key[i - 1] in _LOWER_DIGIT:
            first.append("_")
        first.append(ch)
    s = "".join(first)
    out: list[str] = []
    for i, ch in enumerate(s):
        if ch in _UPPER and i and s[i - 1] in _UPPER and s[i + 1 : i + 2] in _LOWER:
            out.append("_")
        out.append(ch)
    return "".join(out).lower()
