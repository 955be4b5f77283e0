"""Push targets: which daemons an ``agent push`` goes to (the config's ``targets`` or ``-h``).

Targets are the config's ``targets`` whose ``sourcePatterns`` has the source as a key and whose
name matches ``-n`` (unanchored search), sorted by name; or the single ad-hoc ``-h`` target,
``https`` unless written ``http://host``. A ``--fingerprint`` pins every selected target, and
only an https target can be pinned. The messages for a target whose certificate is not trusted
(:func:`tls_failure_message`, :func:`fingerprint_mismatch_message`) are here too (``push`` and
``status`` use them).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, urlencode, urlsplit

from agent.config.schema import Config, parse_fingerprint
from agent.core.errors import ConfigError, UsageError
from agent.core.records import Record

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_PORT = "4000"
DEFAULT_PUSH_PATH = "/etcha/v1/push"


@dataclass(frozen=True, slots=True, repr=False, eq=False)
class PushTarget(Record):
    """One destination of a push.

    Attributes:
        name: the target name (``-h`` host for an ad-hoc target).
        scheme: ``https``, or ``http`` for ``insecure`` targets.
        hostname: host name or address.
        port: TCP port as text.
        path_push: push path prefix (``/etcha/v1/push``).
        pattern: the target's ``sourcePatterns`` entry for the source ("" = use the CLI argument).
        vars: target vars laid over the runVars when signing.
        fingerprint: ``sha256:<hex>`` pinning the target's certificate ("" = verify as usual).
    """

    name: str
    scheme: str
    hostname: str
    port: str
    path_push: str
    pattern: str = ""
    vars: Mapping[str, Any] = field(default_factory=dict)
    fingerprint: str = ""

    def url(self, source: str, *, check: bool = False, parent_filter: str = "") -> str:
        """The push URL for ``source`` with the check/filter query (SPEC 14).

        Args:
            source: the source name.
            check: ask for a check-mode run.
            parent_filter: parent-id filter regex ("" = none).

        Returns:
            ``<scheme>://<host:port><pathPush>/<source>[?check=true&filter=…]``.
        """
        host = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        path = "/" + self.path_push.strip("/") if self.path_push.strip("/") else ""
        url = f"{self.scheme}://{host}:{self.port}{path}/{quote(source, safe='')}"
        query: dict[str, str] = {}
        if check:
            query["check"] = "true"
        if parent_filter:
            query["filter"] = parent_filter
        if query:
            url += "?" + urlencode(query)
        return url


def _port_text(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_PORT
    return str(value)


def ad_hoc_target(
    host: str, *, port: str | None, path: str | None, fingerprint: str = ""
) -> PushTarget:
    """The ``-h host`` target: https unless the host is written ``http://host``.

    Args:
        host: host name, address, or ``http(s)://host[:port]``.
        port: ``-p`` (default 4000, or the port in the URL).
        path: ``-u`` (default ``/etcha/v1/push``).
        fingerprint: ``--fingerprint`` (canonical ``sha256:<hex>``, "" = none).

    Returns:
        The target.

    Raises:
        UsageError: the host is empty.
    """
    scheme = "https"
    hostname = host
    url_port: str | None = None
    if host.startswith(("http://", "https://")):
        parts = urlsplit(host)
        scheme = parts.scheme
        hostname = parts.hostname or ""
        url_port = str(parts.port) if parts.port else None
    if not hostname:
        raise UsageError(f"-h: expected a host name or http(s)://host, got {host!r}")
    return PushTarget(
        name=host,
        scheme=scheme,
        hostname=hostname,
        port=port or url_port or DEFAULT_PORT,
        path_push=path or DEFAULT_PUSH_PATH,
        fingerprint=fingerprint,
    )


def select_targets(
    config: Config,
    source: str,
    *,
    host: str | None = None,
    port: str | None = None,
    path: str | None = None,
    target_filter: str | None = None,
    fingerprint: str | None = None,
) -> list[PushTarget]:
    """The targets a push goes to, sorted by name.

    Args:
        config: the loaded config.
        source: the source name; config targets must list it in ``sourcePatterns``.
        host: ``-h``: push to this host only.
        port: ``-p``: port for ``-h`` (and, when given, for config targets).
        path: ``-u``: push path for ``-h`` (and, when given, for config targets).
        target_filter: ``-n``: a regex searched (unanchored) in target names.
        fingerprint: ``--fingerprint``: pin this certificate for every selected target (it
            replaces the targets' own ``fingerprint``).

    Returns:
        The targets.

    Raises:
        UsageError: ``target_filter`` is not a valid regex, ``fingerprint`` is malformed, or
            ``fingerprint`` is given for a plain-HTTP target.
    """
    pinned = parse_pin(fingerprint)
    targets = _select(config, source, host, port, path, target_filter, pinned)
    require_https_for_pin(targets, pinned)
    return targets


def parse_pin(fingerprint: str | None) -> str:
    """``--fingerprint`` in canonical form (``""`` when not given).

    Raises:
        UsageError: a malformed fingerprint.
    """
    if not fingerprint:
        return ""
    try:
        return parse_fingerprint(fingerprint)
    except ValueError as exc:
        raise UsageError(f"--fingerprint: {exc}") from exc


def require_https_for_pin(targets: Sequence[PushTarget], pinned: str) -> None:
    """Refuse a ``--fingerprint`` pin for a plain-HTTP target (nothing to pin).

    Raises:
        UsageError: naming the first such target.
    """
    for target in targets:
        if pinned and target.scheme != "https":
            raise UsageError(
                f"--fingerprint: expected an https target to pin, got {target.name} over http"
            )


def config_target(
    config: Config,
    name: str,
    *,
    port: str = "",
    path_push: str = "",
    pattern: str = "",
    pinned: str = "",
) -> PushTarget:
    """The :class:`PushTarget` of ``targets.<name>`` (the one place config targets are read).

    Raises:
        ConfigError: a hostname with a scheme, path or user info.
    """
    tc = config.targets[name]
    hostname = tc.hostname or name
    if "/" in hostname or "@" in hostname:
        raise ConfigError(
            f"targets.{name}.hostname: expected a host name or address, got {hostname!r} "
            "(no scheme or path: use insecure: true for plain http, pathPush for the path)"
        )
    return PushTarget(
        name=name,
        scheme="http" if tc.insecure else "https",
        hostname=hostname,
        port=port or _port_text(tc.port),
        path_push=path_push,
        pattern=pattern,
        vars=dict(tc.vars or {}),
        fingerprint=pinned or tc.fingerprint,
    )


def _select(
    config: Config,
    source: str,
    host: str | None,
    port: str | None,
    path: str | None,
    target_filter: str | None,
    pinned: str,
) -> list[PushTarget]:
    if host:
        return [ad_hoc_target(host, port=port, path=path, fingerprint=pinned)]
    regex: re.Pattern[str] | None = None
    if target_filter:
        try:
            regex = re.compile(target_filter)
        except re.error as exc:
            raise UsageError(
                f"-n: expected a regular expression, got {target_filter!r}: {exc}"
            ) from exc
    targets: list[PushTarget] = []
    for name in sorted(config.targets):
        tc = config.targets[name]
        patterns: Mapping[str, str] = tc.source_patterns or {}
        if source not in patterns:
            continue
        if regex is not None and not regex.search(name):
            continue
        targets.append(
            config_target(
                config,
                name,
                port=port or "",
                path_push=path or tc.path_push or DEFAULT_PUSH_PATH,
                pattern=patterns[source] or "",
                pinned=pinned,
            )
        )
    return targets


def no_targets_message(config: Config, source: str, spec: str, target_filter: str | None) -> str:
    """The error for a push without targets: the config snippet to add, or ``-h HOST``.

    Args:
        config: the loaded config.
        source: the source name.
        spec: the pattern path or command given ("" = none).
        target_filter: ``-n`` ("" or None = none).

    Returns:
        With a filter that hid every target, the names it could have matched; else a
        ``targets`` block for the config and the ``-h HOST`` alternative.
    """
    if target_filter:
        names = [t.name for t in select_targets(config, source)]
        if names:
            return (
                f"push: expected a target for {source!r} matching -n {target_filter!r}, got "
                f"none (targets for {source!r}: {', '.join(names)})"
            )
    pattern = spec if spec.endswith(".jsonnet") else ""
    target = {"hostname": "web1.example.com", "sourcePatterns": {source: pattern}}
    snippet = json.dumps({"targets": {"web1": target}})
    arg = f" {spec}" if spec else " PATTERN.jsonnet"
    return (
        f"push: expected at least one target with sourcePatterns for {source!r}, got none. "
        f"Add one to the config:\n  {snippet[1:-1]},\n"
        + (
            "  (an empty sourcePatterns value pushes the pattern or command given on the "
            "command line)\n"
            if not pattern
            else ""
        )
        + f"or push to one host: agent push -h HOST {source}{arg}"
    )


def tls_failure_message(target: PushTarget, reason: str) -> str:
    """The error for a certificate the push client could not verify: names the three fixes.

    Args:
        target: the target.
        reason: what the TLS library said (e.g. ``self-signed certificate``).

    Returns:
        One line naming ``httpClient.caFile``, ``fingerprint`` and ``httpClient.tlsSkipVerify``.
    """
    return (
        f"TLS verification of {target.hostname}:{target.port} failed ({reason}). "
        "To trust it: set httpClient.caFile to its CA (for an agent's self-signed certificate, "
        "a copy of the target's <stateDir>/tls/cert.pem); or pin "
        "the certificate with fingerprint (--fingerprint sha256:… or targets.<name>.fingerprint; "
        "`agent fingerprint` on the target prints it, `agent run` logs it); or, least safe, set "
        "httpClient.tlsSkipVerify: true"
    )


def fingerprint_mismatch_message(target: PushTarget, expected: bytes, got: bytes) -> str:
    """The error for a pinned target that presented another certificate."""
    return (
        f"certificate fingerprint mismatch for {target.hostname}:{target.port}: expected "
        f"sha256:{expected.hex()}, got sha256:{got.hex()} (a different certificate: "
        "if the target's certificate was replaced on purpose, pin the new fingerprint)"
    )
