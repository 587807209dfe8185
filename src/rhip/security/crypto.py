"""National cryptography (商用密码): SM3 hashes and HMACs, SM4 field encryption, SM2 signatures.

SM3 and SM4 come from OpenSSL through ``cryptography``; SM2 from ``gmssl``. Nothing here is a
hand-written cipher. Field encryption uses SM4-GCM with a random 96-bit nonce and records the key
version in the ciphertext (``sm4:v<N>:<base64>``) so keys can be rotated without a flag day.
"""

from __future__ import annotations

import base64
import hashlib
import hmac as _hmac
import secrets
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from rhip.errors import InvalidRequest
from rhip.security.keys import KeyRing

_PREFIX = "sm4:v"


def sm3(data: bytes) -> bytes:
    """SM3 digest (GB/T 32905) of ``data``.

    Copies a hashlib SM3 object when the OpenSSL under Python offers SM3 (it does from OpenSSL
    1.1.1 on): a third cheaper than a new ``cryptography`` hash, and the audit chain hashes every
    audited request. Both are OpenSSL's SM3; ``cryptography``'s is the fallback.
    """
    prototype = _hashlib_sm3()
    if prototype is None:
        digest = hashes.Hash(hashes.SM3())
        digest.update(data)
        return digest.finalize()
    h = prototype.copy()
    h.update(data)
    return h.digest()


@lru_cache(maxsize=1)
def _hashlib_sm3() -> Any:
    """An empty hashlib SM3 object to copy, or None when this OpenSSL has no SM3."""
    try:
        return hashlib.new("sm3")
    except ValueError:
        return None


def sm3_hex(data: bytes) -> str:
    """SM3 digest as lowercase hex."""
    return sm3(data).hex()


def sm3_hmac(key: bytes, data: bytes) -> str:
    """HMAC-SM3 as hex: keyed pseudonyms (e.g. of citizen IDs) that cannot be reversed by guessing."""
    mac = _keyed_hmac(key).copy()
    mac.update(data)
    return mac.finalize().hex()


@lru_cache(maxsize=16)
def _keyed_hmac(key: bytes) -> crypto_hmac.HMAC:
    """An HMAC-SM3 context holding only the key, copied for each value (a third of the cost of a new one).

    Never updated itself, so every copy starts from the keyed state.
    """
    return crypto_hmac.HMAC(key, hashes.SM3())


@lru_cache(maxsize=16)
def _sm4(key: bytes) -> algorithms.SM4:
    """The SM4 algorithm object of a key, checked once; each encryption still gets its own nonce."""
    return algorithms.SM4(key)


def sm4_ecb_block(key: bytes, block: bytes) -> bytes:
    """Encrypt exactly one 16-byte block with SM4 (GB/T 32907); for test vectors, not for data."""
    if len(block) != 16 or len(key) != 16:
        raise ValueError("SM4 works on 16-byte keys and blocks")
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def sm4_encrypt(key: bytes, plaintext: bytes, aad: bytes = b"") -> bytes:
    """SM4-GCM: nonce (12) || ciphertext || tag (16)."""
    nonce = secrets.token_bytes(12)
    enc = Cipher(_sm4(key), modes.GCM(nonce)).encryptor()
    if aad:
        enc.authenticate_additional_data(aad)
    body = enc.update(plaintext) + enc.finalize()
    return nonce + body + enc.tag


def sm4_decrypt(key: bytes, blob: bytes, aad: bytes = b"") -> bytes:
    """Inverse of :func:`sm4_encrypt`; InvalidRequest when the data was altered or the key is wrong."""
    if len(blob) < 28:
        raise InvalidRequest("encrypted field: too short")
    nonce, body, tag = blob[:12], blob[12:-16], blob[-16:]
    dec = Cipher(_sm4(key), modes.GCM(nonce, tag)).decryptor()
    if aad:
        dec.authenticate_additional_data(aad)
    try:
        return dec.update(body) + dec.finalize()
    except InvalidTag:
        raise InvalidRequest("encrypted field: authentication failed (altered data or wrong key)") from None


class FieldCipher:
    """Encrypts designated sensitive fields (citizen ID, phone) under the current SM4 key version."""

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def encrypt(self, value: str, *, context: str = "") -> str:
        """``sm4:v<N>:<base64url>``; ``context`` (e.g. the field path) is bound as associated data."""
        version, key = self.keys.current("sm4")
        blob = sm4_encrypt(key, value.encode("utf-8"), context.encode("utf-8"))
        return f"{_PREFIX}{version}:{base64.urlsafe_b64encode(blob).decode('ascii')}"

    def decrypt(self, token: str, *, context: str = "") -> str:
        """The plaintext of a value made by :meth:`encrypt` (under any kept key version)."""
        if not token.startswith(_PREFIX):
            raise InvalidRequest("encrypted field: not an sm4 token")
        version_text, _, payload = token[len(_PREFIX) :].partition(":")
        key = self.keys.get("sm4", int(version_text))
        blob = base64.urlsafe_b64decode(payload.encode("ascii"))
        return sm4_decrypt(key, blob, context.encode("utf-8")).decode("utf-8")

    def reencrypt(self, token: str, *, context: str = "") -> str:
        """Re-encrypt under the current key version (after ``rhip keys rotate``)."""
        return self.encrypt(self.decrypt(token, context=context), context=context)

    def pseudonym(self, value: str) -> str:
        """Stable HMAC-SM3 pseudonym of a value under the current HMAC key."""
        _, key = self.keys.current("hmac")
        return sm3_hmac(key, value.encode("utf-8"))

    def hmac_keys(self) -> list[tuple[int, bytes]]:
        """Every kept HMAC key, newest first, as ``(version, key)`` (none before the first key)."""
        return [(v, self.keys.get("hmac", v)) for v in reversed(self.keys.versions("hmac"))]

    def pseudonyms(self, value: str) -> list[str]:
        """The pseudonyms of a value under every kept HMAC key version (none before the first key).

        Searching by all of them finds records written before an ``hmac`` rotation that have not
        been re-encrypted yet; no key is generated by asking.
        """
        data = value.encode("utf-8")
        return [sm3_hmac(self.keys.get("hmac", v), data) for v in self.keys.versions("hmac")]


@dataclass(frozen=True)
class SM2KeyPair:
    """An SM2 key pair as hex: private scalar (64 hex) and uncompressed public point x||y (128 hex)."""

    private: str
    public: str


def _sm2(private: str, public: str) -> object:
    from gmssl import sm2

    return sm2.CryptSM2(private_key=private, public_key=public)


def sm2_public_from_private(private: str) -> str:
    """The public point of an SM2 private key (hex)."""
    from gmssl import sm2

    crypt = sm2.CryptSM2(private_key=private, public_key="")
    return str(crypt._kg(int(private, 16), crypt.ecc_table["g"]))


#: Fresh SM2 keys tried before giving up (a key fails its self-test about once in 300 draws).
_SM2_KEY_ATTEMPTS = 16


def sm2_generate() -> SM2KeyPair:
    """A fresh SM2 key pair that signs and verifies with the library in use.

    gmssl's point arithmetic mishandles about one private scalar in 300 (its signatures then fail
    verification, or hashing the Z-value raises); such a key would leave documents that nobody can
    verify, so each draw is checked with a sign/verify round trip and replaced when it fails.
    """
    from gmssl import sm2

    n = int(sm2.default_ecc_table["n"], 16)
    for _ in range(_SM2_KEY_ATTEMPTS):
        scalar = secrets.randbelow(n - 2) + 1
        private = f"{scalar:064x}"
        pair = SM2KeyPair(private, sm2_public_from_private(private))
        if _sm2_round_trip(pair):
            return pair
    raise RuntimeError(f"no usable SM2 key in {_SM2_KEY_ATTEMPTS} draws")


def _sm2_round_trip(pair: SM2KeyPair) -> bool:
    probe = b"rhip sm2 key self-test"
    try:
        return sm2_verify(pair.public, probe, sm2_sign(pair, probe))
    except (ValueError, TypeError, IndexError):  # binascii.Error is a ValueError
        return False


def sm2_sign(keys: SM2KeyPair, data: bytes, k: str | None = None) -> str:
    """SM2 signature (with the SM3 Z-value, GB/T 32918.2) as hex r||s; ``k`` only for test vectors."""
    crypt = _sm2(keys.private, keys.public)
    nonce = k or f"{secrets.randbits(256):064x}"
    return str(crypt.sign_with_sm3(data, nonce))  # type: ignore[attr-defined]


def sm2_verify(public: str, data: bytes, signature: str) -> bool:
    """True when ``signature`` (hex r||s) is a valid SM2 signature of ``data`` by ``public``."""
    try:
        crypt = _sm2("", public)
        return bool(crypt.verify_with_sm3(signature, data))  # type: ignore[attr-defined]
    except (ValueError, TypeError, IndexError):
        return False


def constant_time_equal(a: str, b: str) -> bool:
    """Compare secrets without leaking timing."""
    return _hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
