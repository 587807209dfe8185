"""Feature extraction: citizen-ID trust, pinyin for homophones, date swaps, blocking keys."""

from __future__ import annotations

from datetime import date

from mpi_helpers import patient

from rhip.fhir import systems
from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.features import blocking_keys, extract_features, swap_day_month, to_pinyin


def test_homophones_have_the_same_pinyin() -> None:
    assert to_pinyin("张伟") == to_pinyin("张威") == "zhangwei"
    assert to_pinyin("欧阳娜") == "ouyangna"


def test_valid_citizen_id_is_trusted(zhang_wei_cid: str) -> None:
    f = extract_features(patient("a", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid))
    assert f.cid == zhang_wei_cid and f.cid_problems == ()


def test_checksum_error_is_flagged_not_trusted(zhang_wei_cid: str) -> None:
    typo = zhang_wei_cid[:10] + ("4" if zhang_wei_cid[10] != "4" else "5") + zhang_wei_cid[11:]
    f = extract_features(patient("a", ("张", "伟"), "1985-03-07", "male", cid=typo))
    assert f.cid is None and f.cid_raw == typo
    assert "checksum" in f.cid_problems


def test_id_inconsistent_with_record_is_not_trusted(zhang_wei_cid: str) -> None:
    """A mother's ID on a newborn's record: valid number, wrong birth date and sex."""
    mother = make_citizen_id("370102", date(1990, 5, 1), 42, "female")
    f = extract_features(patient("baby", ("张", "宝"), "2024-01-02", "male", cid=mother))
    assert f.cid is None
    assert set(f.cid_problems) == {"birth-date-mismatch", "sex-mismatch"}


def test_full_width_id_is_normalised(zhang_wei_cid: str) -> None:
    wide = "".join(chr(ord(c) + 0xFEE0) for c in zhang_wei_cid)
    f = extract_features(patient("a", ("张", "伟"), "1985-03-07", "male", cid=wide))
    assert f.cid == zhang_wei_cid


def test_day_month_swap() -> None:
    assert swap_day_month("1985-03-07") == "1985-07-03"
    assert swap_day_month("1985-03-25") is None
    assert swap_day_month("1985-03-03") is None


def test_blocking_keys_survive_single_errors(zhang_wei_cid: str) -> None:
    base = extract_features(
        patient("a", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid, phone="13800000001")
    )
    swapped = extract_features(patient("b", ("张", "威"), "1985-07-03", "male"))
    typo_dob = extract_features(patient("c", ("张", "伟"), "1985-03-08", "male"))
    phone_only = extract_features(patient("d", ("章", "卫"), "1958-03-07", "male", phone="138-0000-0001"))
    for other in (swapped, typo_dob, phone_only):
        assert set(blocking_keys(base)) & set(blocking_keys(other)), other.record_id


def test_person_cards_are_keys() -> None:
    f = extract_features(
        patient("a", ("李", "娜"), "1990-01-01", "female", cards=[(systems.HEALTH_CARD, "HC123")])
    )
    assert f"k:{systems.HEALTH_CARD}|HC123" in blocking_keys(f)
    assert (systems.HEALTH_CARD, "HC123") in f.cards


def test_encrypted_fields_count_as_absent() -> None:
    """Regression: SM4 tokens of protected Patients must not be flagged as malformed citizen IDs."""
    body = patient("a", ("李", "娜"), "1990-01-01", "female", cid="sm4:v1:abc", phone="13800000000")
    body["telecom"][0]["value"] = "sm4:v1:def"
    f = extract_features(body)
    assert f.cid is None and f.cid_raw is None and f.cid_problems == () and f.phone is None
