"""SM3, SM4 and SM2 against the GB/T standards' examples, and SM4 field encryption with key rotation."""

from __future__ import annotations

from pathlib import Path

import pytest

from rhip.errors import InvalidRequest
from rhip.security.crypto import (
    FieldCipher,
    sm2_generate,
    sm2_public_from_private,
    sm2_sign,
    sm2_verify,
    sm3_hex,
    sm3_hmac,
    sm4_ecb_block,
)
from rhip.security.keys import KeyRing
from rhip.security.signing import sign_document, verify_document


def test_sm3_gbt32905_example_abc() -> None:
    assert sm3_hex(b"abc") == "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"


def test_sm3_gbt32905_example_512_bits() -> None:
    assert sm3_hex(b"abcd" * 16) == "debe9ff92275b8a138604889c18e5a4d6fdb70e5387e5765293dcba39c0c5732"


def test_sm3_hmac_is_keyed() -> None:
    assert sm3_hmac(b"k1", b"110101199003077777") != sm3_hmac(b"k2", b"110101199003077777")
    assert len(sm3_hmac(b"k1", b"x")) == 64


def test_sm4_gbt32907_example() -> None:
    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    assert sm4_ecb_block(key, key).hex() == "681edf34d206965e86b3e94f536e4246"


@pytest.mark.slow
def test_sm4_gbt32907_million_iterations() -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = bytes.fromhex("0123456789abcdeffedcba9876543210")
    enc = Cipher(algorithms.SM4(key), modes.ECB()).encryptor()
    block = key
    for _ in range(1_000_000):
        block = enc.update(block)
    assert block.hex() == "595298c7c6fd271f0402f804c33d3f66"


def test_sm2_sign_verify_round_trip_and_tamper() -> None:
    keys = sm2_generate()
    assert sm2_public_from_private(keys.private) == keys.public
    sig = sm2_sign(keys, b"discharge summary")
    assert sm2_verify(keys.public, b"discharge summary", sig)
    assert not sm2_verify(keys.public, b"discharge summarY", sig)
    assert not sm2_verify(sm2_generate().public, b"discharge summary", sig)


def test_sm2_fixed_k_is_deterministic_and_verifies() -> None:
    keys = sm2_generate()
    k = "59276e27d506861a16680f3ad9c02dccef3cc1fa3cdbe4ce6d54b80deac1bc21"
    assert sm2_sign(keys, b"message digest", k) == sm2_sign(keys, b"message digest", k)
    assert sm2_verify(keys.public, b"message digest", sm2_sign(keys, b"message digest", k))


def test_field_cipher_rotation_keeps_old_values_readable(tmp_path: Path) -> None:
    ring = KeyRing(tmp_path)
    cipher = FieldCipher(ring)
    old = cipher.encrypt("13800138000", context="Patient.telecom")
    assert old.startswith("sm4:v1:") and "13800138000" not in old
    assert ring.rotate("sm4") == 2
    new = cipher.reencrypt(old, context="Patient.telecom")
    assert new.startswith("sm4:v2:")
    assert cipher.decrypt(old, context="Patient.telecom") == cipher.decrypt(new, context="Patient.telecom")
    with pytest.raises(InvalidRequest):
        cipher.decrypt(old, context="Patient.identifier")  # bound to its field
    assert (tmp_path / "keys" / "sm4" / "v1.key").stat().st_mode & 0o777 == 0o600


def test_document_signature_verifies_and_detects_change() -> None:
    keys = sm2_generate()
    doc = {"resourceType": "DocumentReference", "id": "d1", "status": "current", "description": "出院小结"}
    prov = sign_document(doc, keys, "Practitioner/p1")
    assert prov["target"] == [{"reference": "DocumentReference/d1"}]
    assert verify_document(doc, prov, keys.public)
    assert verify_document({**doc, "meta": {"versionId": "2"}}, prov, keys.public)
    assert not verify_document({**doc, "description": "changed"}, prov, keys.public)
    assert not verify_document(doc, prov, sm2_generate().public)
