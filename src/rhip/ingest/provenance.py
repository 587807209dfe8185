"""Provenance for every stored resource: which facility, which connector, which file/line or message.

Ingest writes FHIR Provenance resources with deterministic ids (derived from the delivery key), so a
re-delivery after a crash rewrites the same Provenance instead of adding another one.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from rhip.fhir import systems
from rhip.ingest.model import SourceInfo

_NAMESPACE = uuid.UUID("6f1c2a4e-8e0b-5b7e-9d3a-2c4d5e6f7a8b")
_NAMESPACE_BYTES = _NAMESPACE.bytes
#: Identifier system of ingest connectors (Provenance.agent of type Device).
CONNECTOR_SYSTEM = "https://rhip.example.org/fhir/sid/ingest-connector"
#: Identifier system of source locations (file#line, message control id) in Provenance.entity.
SOURCE_SYSTEM = "https://rhip.example.org/fhir/sid/ingest-source"
_PARTICIPANT = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"


def stable_id(*parts: str) -> str:
    """A deterministic FHIR id (uuid5 hex, 32 chars) for the given parts.

    ``uuid.uuid5(namespace, name).hex`` computed on the digest's bytes directly (SHA-1 of the
    namespace and the name, version and variant bits set), without building a UUID object on
    the way: several ids per message and per resource.
    """
    digest = bytearray(hashlib.sha1(_NAMESPACE_BYTES + "\x1f".join(parts).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def scoped_key(source: SourceInfo, key: str) -> str:
    """The idempotency key of a record: sha-256 of facility, connector and the record's own key."""
    return hashlib.sha256(f"{source.facility}\x1f{source.connector}\x1f{key}".encode()).hexdigest()


#: Text that ``quote(text, safe=_URI_SAFE)`` returns unchanged (its always-safe characters and ours).
_URI_SAFE = "/:#=.-_"
_UNQUOTED = re.compile(r"[A-Za-z0-9_.~/:#=\-]*").fullmatch


def source_uri(source: SourceInfo, position: str) -> str:
    """``meta.source`` value naming facility, connector, file and position of a resource.

    Every stored resource gets one; names and positions are nearly always plain ASCII, which is
    recognised by one regex instead of going through ``quote``'s byte-level layers.
    """
    text = f"{source.facility}/{source.connector}/{position}"
    return "urn:rhip:ingest:" + (text if _UNQUOTED(text) else quote(text, safe=_URI_SAFE))


def now_instant() -> str:
    """The current time as a FHIR instant in UTC."""
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def build_provenance(
    prov_id: str, targets: list[dict[str, Any]], source: SourceInfo, entities: list[str], recorded: str
) -> dict[str, Any]:
    """A Provenance naming ``targets``, the facility and connector as agents, and source entities."""
    return {
        "resourceType": "Provenance",
        "id": prov_id,
        "target": [{"reference": f"{t['resourceType']}/{t['id']}"} for t in targets],
        "recorded": recorded,
        "activity": {
            "coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-DataOperation", "code": "CREATE"}]
        },
        "agent": [
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "custodian"}]},
                "who": {
                    "type": "Organization",
                    "identifier": {"system": systems.ORGANIZATION_CODE, "value": source.facility},
                },
            },
            {
                "type": {"coding": [{"system": _PARTICIPANT, "code": "assembler"}]},
                "who": {
                    "type": "Device",
                    "identifier": {"system": CONNECTOR_SYSTEM, "value": source.connector},
                    "display": f"rhip ingest connector {source.connector}",
                },
            },
        ],
        "entity": [
            {"role": "source", "what": {"identifier": {"system": SOURCE_SYSTEM, "value": e}}}
            for e in entities
        ],
    }
