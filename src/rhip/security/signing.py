"""SM2 electronic signatures of clinical documents (DocumentReference, Composition).

A practitioner signs the canonical JSON of a document (keys sorted, compact, without ``meta``,
``text`` and ``signature`` extensions) with SM2/SM3; the result is a FHIR ``Signature`` whose
``data`` is a JWS-like detached token ``base64url(header)..base64url(r||s)`` with header
``{"alg": "SM2SM3", "kid": <signer public key fingerprint>}``. Anyone holding the practitioner's
public key verifies it with :func:`verify_document`. It is carried in a Provenance resource
(``Provenance.target`` = the document, ``Provenance.signature``) so the document body is unchanged.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from rhip.errors import InvalidRequest
from rhip.security.crypto import SM2KeyPair, sm2_sign, sm2_verify, sm3_hex

SIGNABLE = frozenset({"DocumentReference", "Composition"})
_SIG_TYPE = {
    "system": "urn:iso-astm:E1762-95:2013",
    "code": "1.2.840.10065.1.12.1.1",
    "display": "Author's Signature",
}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def document_bytes(resource: dict[str, Any]) -> bytes:
    """The bytes that are signed: canonical JSON without meta and narrative."""
    if resource.get("resourceType") not in SIGNABLE:
        raise InvalidRequest(
            "only DocumentReference and Composition are signed", expression=("resourceType",)
        )
    body = {k: v for k, v in resource.items() if k not in ("meta", "text")}
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


def key_id(public: str) -> str:
    """A short fingerprint of an SM2 public key (first 16 hex of its SM3 digest)."""
    return sm3_hex(bytes.fromhex(public))[:16]


def sign_document(resource: dict[str, Any], keys: SM2KeyPair, signer: str) -> dict[str, Any]:
    """A Provenance resource carrying the SM2 signature of ``resource`` by ``signer`` (a reference)."""
    header = orjson.dumps({"alg": "SM2SM3", "kid": key_id(keys.public)}, option=orjson.OPT_SORT_KEYS)
    payload = document_bytes(resource)
    signing_input = _b64(header).encode("ascii") + b"." + _b64(payload).encode("ascii")
    signature = sm2_sign(keys, signing_input)
    token = f"{_b64(header)}..{_b64(bytes.fromhex(signature))}"
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    target = f"{resource['resourceType']}/{resource.get('id', '')}"
    return {
        "resourceType": "Provenance",
        "target": [{"reference": target}],
        "recorded": now,
        "agent": [{"who": {"reference": signer}}],
        "signature": [
            {
                "type": [_SIG_TYPE],
                "when": now,
                "who": {"reference": signer},
                "targetFormat": "application/fhir+json",
                "sigFormat": "application/jose",
                "data": base64.b64encode(token.encode("ascii")).decode("ascii"),
            }
        ],
    }


def verify_document(resource: dict[str, Any], provenance: dict[str, Any], public: str) -> bool:
    """True when the Provenance holds a valid SM2 signature of ``resource`` by the key ``public``."""
    for sig in provenance.get("signature") or []:
        try:
            token = base64.b64decode(sig.get("data", "")).decode("ascii")
            header_b64, _, sig_b64 = token.split(".")
            header = orjson.loads(_unb64(header_b64))
        except (ValueError, orjson.JSONDecodeError):
            continue
        if header.get("alg") != "SM2SM3" or header.get("kid") != key_id(public):
            continue
        signing_input = header_b64.encode("ascii") + b"." + _b64(document_bytes(resource)).encode("ascii")
        if sm2_verify(public, signing_input, _unb64(sig_b64).hex()):
            return True
    return False
