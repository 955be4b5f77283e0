"""`agent build`: run a pattern's build commands, then sign the pattern into a JWT.

Steps (reference etcha-build-verify-cli.md §4.1): render → run the build commands with
``buildExec`` → collect ``buildManifest`` and ``runVar_*`` events → sign → write atomically.

Signing precedence (SPEC 22): ``build.signingCommands`` (given ``ETCHA_PAYLOAD``; the trimmed
output of the first ``etcha:jwt`` event is the token), then ``build.signingKey``, then
``build.signingKeyPath`` (a bare file name is searched upward from the working directory).

Delegation (docs/security.md): ``build.scope`` adds the claim ``etchaScope``, and
``build.delegationChain`` (JWTs or files, root first) puts ``etchaChain`` in the protected header.
With neither, header and payload are byte-identical to Etcha's. A chain needs a signing key
(signing commands sign a payload only, with their own header).
"""

from __future__ import annotations

import shlex
import stat
import time
from collections.abc import Mapping

from agent import __version__
from agent.core.errors import AgentError, BuildError
from agent.core.logs import get_logger
from agent.jws.keys import parse_signing_key
from agent.jws.sign import encode_payload, etcha_claims, sign_token
from agent.pattern.load import LoadedPattern, load_from_disk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from agent.config.schema import Config
    from agent.jws.keys import SigningKey

logger = get_logger(__name__)

DEFAULT_OUTPUT = "etcha.jwt"


def find_upward(name: str, start: Path) -> Path | None:
    """Find ``name`` in ``start`` or its parents (for bare file names), else as given."""
    from pathlib import Path  # stdlib, only with a signingKeyPath (off `push`: issue 14)

    candidate = Path(name)
    if candidate.is_absolute() or len(candidate.parts) > 1:
        return candidate if candidate.exists() else None
    for directory in (start, *start.parents):
        path = directory / name
        if path.exists():
            return path
    return None


async def collect_build(
    loaded: LoadedPattern, *, parent_id: str = "build"
) -> tuple[str, dict[str, Any]]:
    """Run the build commands; return ``(buildManifest, runVars)``.

    Raises:
        BuildError: a build command failed.
    """
    run_vars: dict[str, Any] = dict(loaded.pattern.run_vars)
    if not loaded.pattern.build:
        return "", run_vars
    from agent.run.engine import Mode, run_commands  # lazy: asyncio, only for build commands

    outcome = await run_commands(
        loaded.pattern.build, exec=loaded.build_exec, mode=Mode.CHANGE, parent_id=parent_id
    )
    if outcome.error is not None:
        raise BuildError(f"build commands failed: {outcome.error}")
    manifest: list[str] = []
    for name, output in outcome.events():
        if name == "buildManifest":
            manifest.append(output.change_out.strip() + "\n")
        elif name.startswith("runVar_"):
            parts = name.split("runVar_")
            if len(parts) == 2 and parts[1]:
                run_vars[parts[1]] = output.change_out.strip()
    return "".join(manifest), run_vars


def _looks_like_jwt(text: str) -> bool:
    return text.startswith("eyJ") and text.count(".") == 2 and "/" not in text


def delegation_chain(config: Config) -> list[str]:
    """``build.delegationChain``: each item a JWT, or a file holding one (root first).

    Raises:
        BuildError: a file cannot be read, or a link is not a JWT or is too large.
    """
    chain: list[str] = []
    if not config.build.delegation_chain:
        return chain
    from pathlib import Path  # stdlib, only with a chain (off `push`: issue 14)

    from agent.trust.chain import MAX_LINK_BYTES  # lazy: the chain code, only with a chain

    for index, item in enumerate(config.build.delegation_chain):
        text = item.strip()
        if not _looks_like_jwt(text):
            try:
                text = Path(item).read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise BuildError(
                    f"build.delegationChain[{index}]: cannot read {item}: {exc}"
                ) from exc
        if not _looks_like_jwt(text) or len(text) > MAX_LINK_BYTES:
            raise BuildError(
                f"build.delegationChain[{index}]: expected a delegation JWT of at most "
                f"{MAX_LINK_BYTES} bytes, got {len(text)} bytes of something else"
            )
        chain.append(text)
    return chain


async def sign_claims(claims: Mapping[str, Any], *, config: Config) -> str:
    """Sign ``claims`` with signingCommands, signingKey or signingKeyPath (SPEC 22).

    ``build.scope`` adds ``etchaScope`` to the claims, ``build.delegationChain`` puts
    ``etchaChain`` in the header.

    Raises:
        BuildError: no signing method is configured, or signing failed.
    """
    if config.build.scope:
        from agent.trust.scope import SCOPE_CLAIM  # lazy: the scope code, only with build.scope

        claims = {**claims, SCOPE_CLAIM: dict(config.build.scope)}
    chain = delegation_chain(config)
    if config.build.signing_commands:
        if chain:
            raise BuildError(
                "build.delegationChain: expected build.signingKey or build.signingKeyPath (a "
                "chain goes into the signed header), got build.signingCommands"
            )
        return await _sign_with_commands(encode_payload(claims), config=config)
    return sign_token(claims, load_signing_key(config), header=header_for(chain))


def header_for(chain: list[str]) -> dict[str, Any] | None:
    """The extra protected header of a pattern token (``None``: Etcha's exact header)."""
    if not chain:
        return None
    from agent.trust.chain import CHAIN_HEADER  # lazy: the chain code, only with a chain

    return {CHAIN_HEADER: chain}


def load_signing_key(config: Config) -> SigningKey:
    """``build.signingKey``, else the ``build.signingKeyPath`` file (searched upward).

    Raises:
        BuildError: none configured, or the file cannot be read.
    """
    key_text = config.build.signing_key
    if not key_text and config.build.signing_key_path:
        from pathlib import Path  # stdlib, only with a signingKeyPath (off `push`: issue 14)

        found = find_upward(config.build.signing_key_path, Path.cwd())
        if found is None:
            raise BuildError(
                f"build.signingKeyPath: no file {config.build.signing_key_path!r} found "
                "in the working directory or its parents"
            )
        try:
            key_text = found.read_text().strip()
            _warn_open_key(str(found), stat.S_IMODE(found.stat().st_mode))
        except OSError as exc:
            raise BuildError(f"build.signingKeyPath: cannot read {found}: {exc.strerror}") from exc
    if not key_text:
        raise BuildError(
            "missing build.signingKey: set build.signingKey, build.signingKeyPath "
            "or build.signingCommands"
        )
    return parse_signing_key(key_text)


def _warn_open_key(path: str, mode: int) -> None:
    """Warn when a signing key file is readable by group or others (each time it is read)."""
    if mode & 0o044:
        logger.warning(
            "signing key %s is readable by group or others (mode %04o); fix: chmod 600 %s",
            path,
            mode,
            shlex.quote(path),
        )


async def _sign_with_commands(payload: str, *, config: Config) -> str:
    from agent.run.engine import Mode, run_commands  # lazy: asyncio, only for signingCommands

    exec_ = config.exec.override(config.build.signing_exec)  # parsed when the config loaded
    outcome = await run_commands(
        config.build.signing_commands,
        exec=exec_,
        mode=Mode.CHANGE,
        env={"ETCHA_PAYLOAD": payload},
        parent_id="signingCommands",
    )
    if outcome.error is not None:
        raise BuildError(f"error signing jwt: {outcome.error}")
    for name, output in outcome.events():
        if name == "jwt" and output.change_out.strip():
            return output.change_out.strip()
    raise BuildError("error signing jwt: no token returned from signingCommands (etcha:jwt)")


async def build_token(
    loaded: LoadedPattern,
    *,
    config: Config,
    extra_run_vars: Mapping[str, Any] | None = None,
    jti: str | None = None,
    expires_in: float | None = None,
    now: float | None = None,
) -> str:
    """Run build commands and sign ``loaded`` into a token.

    Args:
        loaded: the rendered pattern.
        config: the loaded config (signing settings).
        extra_run_vars: vars laid over the run vars (push target vars).
        jti: override the ``jti`` claim (push tokens get a random one).
        expires_in: override the pattern's expiry (push tokens).
        now: the signing time.
    """
    manifest, run_vars = await collect_build(loaded)
    if extra_run_vars:
        run_vars.update(extra_run_vars)
    pattern = loaded.pattern
    claims = etcha_claims(
        pattern_entrypoint=loaded.entrypoint,
        pattern_files=loaded.files,
        build_manifest=manifest,
        run_vars=run_vars,
        version=__version__,
        audience=pattern.audience,
        expires_in=pattern.expires_in if expires_in is None else expires_in,
        issuer=pattern.issuer,
        subject=pattern.subject,
        jti=pattern.id if jti is None else jti,
        now=time.time() if now is None else now,
    )
    return await sign_claims(claims, config=config)


async def build_to_file(
    path: Path, dest: Path | None, *, config: Config, disable_external: bool = False
) -> Path:
    """`agent build <pattern> [dest]`: render, build, sign and write the token.

    The destination is ``dest``, else the pattern's ``buildOutput``, else ``etcha.jwt``
    (relative to the working directory). ``vars.dstPath``/``dstDir`` name that destination.

    Raises:
        AgentError: rendering, building or signing failed; no partial file is left.
    """
    loaded, target = prepare_build(path, dest, config=config, disable_external=disable_external)
    try:
        token = await build_token(loaded, config=config)
    except BuildError:
        raise
    except AgentError as exc:
        raise BuildError(f"building {path}: {exc}") from exc
    return write_token(target, token)


def prepare_build(
    path: Path, dest: Path | None, *, config: Config, disable_external: bool = False
) -> tuple[LoadedPattern, Path]:
    """Render ``path`` for :func:`build_to_file`; return the pattern and its destination.

    Raises:
        AgentError: rendering failed, or the destination is a directory.
    """
    from pathlib import Path  # stdlib, `agent build` only (off `push`: issue 14)

    def extra(target: Path) -> dict[str, str]:
        return {
            "srcDir": str(path.parent),
            "srcPath": str(path),
            "dstDir": str(target.parent),
            "dstPath": str(target),
        }

    guess = dest or Path(DEFAULT_OUTPUT)
    loaded = load_from_disk(
        path, config=config, source="", extra_vars=extra(guess), disable_external=disable_external
    )
    if dest is None and loaded.pattern.build_output:
        target = Path(loaded.pattern.build_output)
        if target != guess:  # render again so dstPath/dstDir name the real destination
            loaded = load_from_disk(
                path,
                config=config,
                source="",
                extra_vars=extra(target),
                disable_external=disable_external,
            )
    else:
        target = guess
    if target.exists() and target.is_dir():
        raise BuildError(f"error writing jwt {target}: it is a directory")
    return loaded, target


def write_token(target: Path, token: str) -> Path:
    """Write ``token`` to ``target`` atomically (mode 0644); return ``target``.

    Raises:
        BuildError: the file could not be written.
    """
    from agent.core.atomicio import atomic_write  # lazy: tempfile and shutil, off `push`

    try:
        atomic_write(target, token, mode=0o644)
    except OSError as exc:
        raise BuildError(f"error writing jwt {target}: {exc.strerror or exc}") from exc
    return target
