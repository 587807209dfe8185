"""Security, consent and the audit trail: who may see what, and proof of every access.

Authentication (OAuth2 token endpoint, JWT bearer tokens, SMART v2 scopes), the authorisation
policy (roles, care relationships, Consent, GB/T 39725 data levels, break-the-glass), the
SM3-chained audit log, and national cryptography (SM2 signatures, SM3 hashes, SM4 field
encryption). The API reaches all of it through :mod:`rhip.api.access`.
"""

from rhip.security.audit import AuditRecord, AuditWriter, VerifyReport, events_for_patient, verify_chain
from rhip.security.crypto import (
    FieldCipher,
    SM2KeyPair,
    sm2_generate,
    sm2_sign,
    sm2_verify,
    sm3,
    sm3_hex,
    sm3_hmac,
    sm4_decrypt,
    sm4_encrypt,
)
from rhip.security.facility import FacilityGuard, check_facility_write
from rhip.security.fields import protect, reveal
from rhip.security.keys import KeyRing
from rhip.security.levels import data_level, sensitive_categories, type_level
from rhip.security.policy import ROLES, Policy, Role
from rhip.security.schema import ensure_schema
from rhip.security.signing import sign_document, verify_document
from rhip.security.tokens import Principal, decode_token, issue_token
from rhip.security.users import Account, authenticate, create_account

__all__ = [
    "ROLES",
    "Account",
    "AuditRecord",
    "AuditWriter",
    "FacilityGuard",
    "FieldCipher",
    "KeyRing",
    "Policy",
    "Principal",
    "Role",
    "SM2KeyPair",
    "VerifyReport",
    "authenticate",
    "check_facility_write",
    "create_account",
    "data_level",
    "decode_token",
    "ensure_schema",
    "events_for_patient",
    "issue_token",
    "protect",
    "reveal",
    "sensitive_categories",
    "sign_document",
    "sm2_generate",
    "sm2_sign",
    "sm2_verify",
    "sm3",
    "sm3_hex",
    "sm3_hmac",
    "sm4_decrypt",
    "sm4_encrypt",
    "type_level",
    "verify_chain",
    "verify_document",
]
