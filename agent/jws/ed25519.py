"""Ed25519 signing and verification with PyNaCl (the keys of :mod:`agent.jws.keys`).

:class:`Ed25519Signer` and :class:`Ed25519Verifier` call PyNaCl's libsodium binding without
importing ``nacl.signing`` (see their docstrings).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


__all__ = ["SEED_BYTES", "SPKI_PREFIX", "Ed25519Signer", "Ed25519Verifier"]

#: The DER prefix of an Ed25519 SubjectPublicKeyInfo (the 32 raw bytes follow).
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
SEED_BYTES = 32


class Ed25519Signer:
    """Ed25519 signing through PyNaCl's own libsodium binding (``nacl._sodium``).

    ``nacl.signing`` imports every binding of the library (~5 ms on each ``agent push`` and
    ``agent build``) where signing needs two functions. The calls are the ones ``nacl.signing``
    makes (``crypto_sign_seed_keypair``, then ``crypto_sign``, whose first 64 bytes are the
    signature), so the signatures are the same bytes: Ed25519 is deterministic. A PyNaCl without
    that module gets ``nacl.signing``.
    """

    __slots__ = ("_nacl", "_public", "_secret")

    def __init__(self, seed: bytes) -> None:
        if len(seed) != SEED_BYTES:
            raise ValueError(f"expected a {SEED_BYTES}-byte Ed25519 seed, got {len(seed)}")
        self._nacl: Any = None
        try:
            from nacl._sodium import ffi, lib
        except ImportError:  # pragma: no cover - a PyNaCl without its cffi module
            import nacl.signing

            self._nacl = nacl.signing.SigningKey(seed)
            self._public = bytes(self._nacl.verify_key)
            self._secret = b""
            return
        if lib.sodium_init() < 0:  # idempotent and thread-safe, as PyNaCl calls it
            raise RuntimeError("libsodium could not be initialised")
        public = ffi.new("unsigned char[]", 32)
        secret = ffi.new("unsigned char[]", 64)
        if lib.crypto_sign_seed_keypair(public, secret, seed) != 0:
            raise RuntimeError("libsodium: crypto_sign_seed_keypair failed")
        self._public = bytes(ffi.buffer(public, 32))
        self._secret = bytes(ffi.buffer(secret, 64))

    def sign(self, data: bytes) -> bytes:
        if self._nacl is not None:  # pragma: no cover - see the class docstring
            signature: bytes = self._nacl.sign(data).signature
            return signature
        from nacl._sodium import ffi, lib  # loaded by __init__ already

        signed = ffi.new("unsigned char[]", len(data) + 64)
        length = ffi.new("unsigned long long *")
        if lib.crypto_sign(signed, length, data, len(data), self._secret) != 0:
            raise RuntimeError("libsodium: crypto_sign failed")
        return bytes(ffi.buffer(signed, 64))

    def public_der(self) -> bytes:
        return SPKI_PREFIX + self._public

    def public_raw(self) -> bytes:
        return self._public


class Ed25519Verifier:
    """Ed25519 verification through PyNaCl's libsodium binding (``nacl._sodium``).

    The call is the one ``nacl.signing.VerifyKey.verify`` makes (``crypto_sign_open`` of the
    signature followed by the data), without importing every binding of the library (about
    0.6 MiB resident in the daemon, issue 14). A PyNaCl without that module gets ``nacl.signing``.
    """

    __slots__ = ("_key", "_raw")

    def __init__(self, raw: bytes) -> None:
        self._key: Any = None
        self._raw = raw
        try:
            from nacl._sodium import lib
        except ImportError:  # pragma: no cover - a PyNaCl without its cffi module
            import nacl.signing

            self._key = nacl.signing.VerifyKey(raw)
            return
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise ValueError("The key must be exactly 32 bytes long")  # VerifyKey's words
        if lib.sodium_init() < 0:  # idempotent and thread-safe, as PyNaCl calls it
            raise RuntimeError("libsodium could not be initialised")

    def verify(self, signature: bytes, data: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            if self._key is not None:  # pragma: no cover - see the class docstring
                self._key.verify(data, signature)
                return True
            from nacl._sodium import ffi, lib  # loaded by __init__ already

            signed = signature + data
            message = ffi.new("unsigned char[]", len(signed))
            length = ffi.new("unsigned long long *")
            opened: int = lib.crypto_sign_open(message, length, signed, len(signed), self._raw)
        except Exception:  # anything libsodium or cffi rejects
            return False
        return opened == 0
