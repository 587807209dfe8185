"""Every identifier-system and code-system URI the platform uses, in one place.

National OIDs (WS/T 500 and the national health-card specification) are used where they are known;
systems that have no national identifier live under the configurable ``identifier_base`` so a region
can put them under its own domain. docs/systems.md shows this table for operators.
"""

from __future__ import annotations

from typing import Final

from rhip.config import get_settings


def _local(path: str) -> str:
    """A URI under the region's base for systems without a national OID."""
    return f"{get_settings().identifier_base.rstrip('/')}/{path}"


#: Canonical URL of the platform's ``$prior-results`` operation (prior lab results and imaging
#: studies for an order); :mod:`rhip.api.operation_definitions` serves its OperationDefinition.
PRIOR_RESULTS_OPERATION: Final = _local("OperationDefinition/prior-results")

# --- Identifier systems for persons (多卡合一: every card is an identifier of a source record) ---
#: 居民身份证号码 (GB 11643); the root of trust for resident identity.
CITIZEN_ID: Final = "urn:oid:2.16.156.10011.1.3"
#: 居民健康卡号 (national resident health card).
HEALTH_CARD: Final = "urn:oid:2.16.156.10011.1.19"
#: 社会保障卡号 (social-security card).
SOCIAL_SECURITY_CARD: Final = "urn:oid:2.16.156.10011.1.15"
#: Virtual resident health card number assigned by the platform to the golden resident record.
VIRTUAL_HEALTH_CARD: Final = _local("sid/virtual-health-card")
#: 预防接种证 (immunisation card).
IMMUNIZATION_CARD: Final = _local("sid/immunization-card")
#: 母子健康手册 (maternal-child health card).
MATERNAL_CHILD_CARD: Final = _local("sid/maternal-child-card")
#: 无偿献血证 (blood-donation certificate).
BLOOD_DONATION_CERT: Final = _local("sid/blood-donation-certificate")
#: HMAC-SM3 pseudonym of the citizen ID, searchable when the ID itself is stored SM4-encrypted.
CITIZEN_ID_PSEUDONYM: Final = _local("sid/citizen-id-hmac-sm3")
#: HMAC-SM3 pseudonym of a phone number's digits, searchable when the number is stored SM4-encrypted.
PHONE_PSEUDONYM: Final = _local("sid/phone-hmac-sm3")
#: 统一社会信用代码 / 医疗机构登记号 of a facility.
ORGANIZATION_CODE: Final = "urn:oid:2.16.156.10011.1.5"
#: 医师执业证书编码 (practitioner licence number).
PRACTITIONER_LICENSE: Final = "urn:oid:2.16.156.10011.1.4"


def facility_card_system(facility_code: str, kind: str = "visit-card") -> str:
    """System URI of a facility's own numbers: ``visit-card``, ``outpatient``, ``inpatient`` or ``mrn``."""
    return _local(f"sid/facility/{facility_code}/{kind}")


# --- Code systems ---
#: Tags and codes of the master patient index (meta.tag code ``golden`` marks a resident record).
MPI_TAG: Final = _local("CodeSystem/mpi")
ICD10: Final = "http://hl7.org/fhir/sid/icd-10"
#: Chinese clinical edition (国家临床版 2.0) codes are ICD-10 extended; kept as a distinct system.
ICD10_CN: Final = "urn:oid:2.16.156.10011.2.3.3.11"
ICD9CM3_CN: Final = "urn:oid:2.16.156.10011.2.3.3.12"
LOINC: Final = "http://loinc.org"
UCUM: Final = "http://unitsofmeasure.org"
ATC: Final = "http://www.whocc.no/atc"
SNOMED: Final = "http://snomed.info/sct"
DICOM_MODALITY: Final = "http://dicom.nema.org/resources/ontology/DCM"
#: GB/T 2261.1 人的性别代码 (0 unknown, 1 male, 2 female, 9 unspecified).
GB_SEX: Final = "urn:oid:2.16.156.10011.2.3.3.4"
#: GB/T 2260 行政区划代码 (administrative divisions).
GB_DIVISION: Final = "urn:oid:2.16.156.10011.2.3.3.3"
OBSERVATION_CATEGORY: Final = "http://terminology.hl7.org/CodeSystem/observation-category"
IDENTIFIER_TYPE: Final = "http://terminology.hl7.org/CodeSystem/v2-0203"
CONDITION_CLINICAL: Final = "http://terminology.hl7.org/CodeSystem/condition-clinical"
ENCOUNTER_CLASS: Final = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
#: 法定传染病: China's notifiable infectious diseases (codes from rhip.fhir.terminology).
NOTIFIABLE_DISEASE: Final = _local("CodeSystem/notifiable-disease")
#: ValueSet of the common lab tests (LOINC codes with Chinese names) from rhip.fhir.terminology.
COMMON_LAB_TESTS: Final = _local("ValueSet/common-lab-tests")


def local_code_system(facility_code: str, domain: str) -> str:
    """System URI of a facility's local codes (e.g. its own lab or drug codes), mapped by ConceptMaps."""
    return _local(f"CodeSystem/local/{facility_code}/{domain}")
