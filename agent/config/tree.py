"""The typed config tree: frozen dataclasses for every section, and their JSON form.

Responsibility: hold the effective config as typed values, and turn it back into its camelCase
JSON form (:meth:`Config.to_dict`, :meth:`Config.masked_dict`).

Invariants:

- Every value is typed when the config loads: durations are float seconds, verify keys
  :class:`VerifyKeyEntry`, commands tuples of :class:`~agent.run.model.Command`, exec objects
  :class:`~agent.run.model.Exec`. Nothing downstream parses config JSON again.
- The JSON of commands and exec objects as written is kept in ``raw`` fields (``repr=False``,
  ``compare=False``) so :meth:`Config.to_dict` and ``show-config`` print what was configured, and
  a config loaded from its own ``to_dict`` is equal to it.
- Secret fields have ``repr=False``.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agent.config.fields import SECTIONS, SOURCE, TARGET, TYPED_JSON_KINDS, Field, snake
from agent.config.values import PublishArtifact, RevocationEntry, VerifyKeyEntry, to_json
from agent.core.records import Record
from agent.run.model import Command, Exec

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


@dataclass(frozen=True, repr=False, eq=False)
class BuildConfig(Record):
    """``build``: signing and the push client."""

    ca_file: str
    delegation_chain: tuple[str, ...]
    push_domain_suffix: str
    push_max_workers: int
    push_timeout: float
    push_token_expires_in: float
    scope: Mapping[str, Any]
    signing_commands: tuple[Command, ...]
    signing_exec: Exec | None
    signing_key: str = field(repr=False)
    signing_key_path: str
    tls_skip_verify: bool
    #: The JSON of the command and exec fields as written (``to_dict`` shows it, not compared).
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, repr=False, eq=False)
class NATSConfig(Record):
    """``nats``: the fleet transport (hosts subscribe, ``agent push --nats`` publishes).

    It is on when ``servers`` is not empty (:attr:`enabled`); ``stream`` "" turns JetStream off.
    """

    creds_file: str
    hostname: str
    nkey_seed_file: str
    password: str = field(repr=False)
    servers: tuple[str, ...]
    stream: str
    subject_prefix: str
    tls: Mapping[str, str]
    token: str = field(repr=False)
    user: str

    @property
    def enabled(self) -> bool:
        """Whether a ``nats`` section with servers is configured."""
        return bool(self.servers)


@dataclass(frozen=True, repr=False, eq=False)
class CLIConfig(Record):
    """``cli``: log and output settings (command-line flags win over these)."""

    disable_external_native: bool
    log_format: str
    log_level: str
    no_color: bool


@dataclass(frozen=True, repr=False, eq=False)
class HTTPClientConfig(Record):
    """``httpClient``: TLS settings for pull, push and ``getFile``, and pull redirects.

    ``tls_skip_verify`` and ``ca_file`` are the same values as in :class:`BuildConfig`.
    ``follow_cross_origin_redirects`` lets a pull follow a redirect to another origin (without
    the custom headers, see :mod:`agent.net.fetch`).
    """

    ca_file: str
    no_system_ca: bool
    tls_skip_verify: bool
    follow_cross_origin_redirects: bool = False


@dataclass(frozen=True, repr=False, eq=False)
class LintConfig(Record):
    """``lint``: files excluded from ``agent lint`` and the external linters.

    ``linters`` holds the checked JSON objects (name -> exec object); ``linter_execs`` the same
    linters parsed into :class:`Exec` values.
    """

    exclude: str
    linters: Mapping[str, Mapping[str, Any]]
    linter_execs: Mapping[str, Exec] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, repr=False, eq=False)
class PublishConfig(Record):
    """``publish``: the artifacts `agent publish` keeps fresh, and its service settings."""

    artifacts: Mapping[str, PublishArtifact] = field(default_factory=dict)
    check_frequency: float = 60.0
    file_mode: str = "0644"
    metrics_address: str = ""


@dataclass(frozen=True, repr=False, eq=False)
class RunConfig(Record):
    """``run``: the daemon, its listener and the global verifiers."""

    audit: bool
    audit_checkpoint_every: int
    audit_journal: bool
    audit_keep: int
    audit_max_bytes: int
    audit_signing_key: str = field(repr=False)
    diff_redact: tuple[str, ...]
    in_process_etcha: bool
    in_process_helpers: bool
    jwt_rule: str
    keepalive_timeout: float
    listen_address: str
    max_body_bytes: int
    max_connections: int
    max_connections_per_address: int
    max_chain_depth: int
    max_token_bytes: int
    persistent_shell: bool
    push_require_exp: bool
    push_require_jti: bool
    randomized_start_delay_sec: int
    rate_limiter_rate: str
    shell_max_sessions: int
    revocation_frequency: float
    revocation_paths: tuple[str, ...]
    revocations: tuple[RevocationEntry, ...]
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
    trust_roots: tuple[VerifyKeyEntry, ...]
    verify_commands: tuple[Command, ...]
    verify_exec: Exec | None
    verify_keys: tuple[VerifyKeyEntry, ...]
    webhook_max_concurrent: int
    #: The JSON of the command and exec fields as written (``to_dict`` shows it, not compared).
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, repr=False, eq=False)
class SourceConfig(Record):
    """``sources.<name>``: where patterns come from and how they run."""

    name: str
    allow_nats: bool
    allow_push: bool
    allow_rollback: bool
    allowed_keys: tuple[str, ...]
    check_only: bool
    commands: tuple[Command, ...]
    events_receive: tuple[str, ...]
    events_receive_exit: bool
    events_send: str
    exec: Exec | None
    jwt_rule: str
    max_token_age: float
    no_remove: bool
    no_restore: bool
    pull_ignore_version: bool
    pull_paths: tuple[str, ...]
    require_exp: bool
    run_frequency: float
    run_multi: bool
    shell: str | Exec
    trigger_only: bool
    trust_roots: tuple[VerifyKeyEntry, ...]
    verify_commands: tuple[Command, ...]
    verify_exec: Exec | None
    verify_keys: tuple[VerifyKeyEntry, ...]
    vars: Mapping[str, Any]
    webhook_paths: tuple[str, ...]
    #: The JSON of the command and exec fields as written (``to_dict`` shows it, not compared).
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)


@dataclass(frozen=True, repr=False, eq=False)
class TargetConfig(Record):
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


@dataclass(frozen=True, repr=False, eq=False)
class Config(Record):
    """The effective config. Build it with ``load_config`` or ``config_from_dict``.

    Commands and exec objects are typed (:class:`Command`, :class:`Exec`) when the config loads;
    the JSON as written is kept only for :meth:`to_dict` (so ``show-config`` prints what was
    configured) and is not part of equality.
    """

    build: BuildConfig
    cli: CLIConfig
    exec: Exec
    http_client: HTTPClientConfig
    lint: LintConfig
    nats: NATSConfig
    run: RunConfig
    sources: Mapping[str, SourceConfig]
    targets: Mapping[str, TargetConfig]
    vars: Mapping[str, Any]
    #: The top-level ``exec`` object as written (``to_dict`` shows it, not compared).
    raw_exec: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    publish: PublishConfig = field(default_factory=PublishConfig)

    def to_dict(self) -> dict[str, Any]:
        """The full effective config in its camelCase JSON form (loadable again)."""
        out: dict[str, Any] = {}
        for section, fields in SECTIONS.items():
            out[section] = record_to_dict(getattr(self, snake(section)), fields)
        out["httpClient"] = {
            "caFile": self.http_client.ca_file,
            "followCrossOriginRedirects": self.http_client.follow_cross_origin_redirects,
            "noSystemCA": self.http_client.no_system_ca,
            "tlsSkipVerify": self.http_client.tls_skip_verify,
        }
        out["exec"] = copy.deepcopy(dict(self.raw_exec)) if self.raw_exec else self.exec.to_dict()
        out["vars"] = copy.deepcopy(dict(self.vars))
        out["sources"] = {n: record_to_dict(s, SOURCE) for n, s in self.sources.items()}
        out["targets"] = self.targets_dict()
        return out

    def targets_dict(self) -> dict[str, Any]:
        """``targets`` as JSON (what the ``getConfig`` native shows), without the rest."""
        return {n: record_to_dict(t, TARGET) for n, t in self.targets.items()}

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
        from agent.config.masking import mask_config  # lazy: only show-config masks

        return mask_config(self.to_dict())


def record_to_dict(record: Any, fields: Sequence[Field]) -> dict[str, Any]:
    """The camelCase JSON of one typed record (commands and exec objects as written)."""
    raw: Mapping[str, Any] = getattr(record, "raw", {})
    out: dict[str, Any] = {}
    for f in fields:
        if f.kind in TYPED_JSON_KINDS and f.key in raw:
            out[f.key] = copy.deepcopy(raw[f.key])
        else:
            out[f.key] = to_json(f, getattr(record, snake(f.key)))
    return out


__all__ = [
    "BuildConfig",
    "CLIConfig",
    "Config",
    "HTTPClientConfig",
    "LintConfig",
    "NATSConfig",
    "PublishArtifact",
    "PublishConfig",
    "RunConfig",
    "SourceConfig",
    "TargetConfig",
    "VerifyKeyEntry",
    "record_to_dict",
]
