"""GB 11643-1999 citizen ID rules, starting from the standard's own published example."""

from __future__ import annotations

from datetime import date

import pytest

from rhip.fhir import check_citizen_id, check_digit, make_citizen_id, normalize_citizen_id

#: The worked example printed in GB 11643-1999: Beijing Chaoyang, born 1949-12-31, female.
PUBLISHED = "11010519491231002X"


def test_published_example_is_valid() -> None:
    assert check_digit(PUBLISHED[:17]) == "X"
    result = check_citizen_id(PUBLISHED)
    assert result.valid and result.problems == ()
    assert result.birth_date == date(1949, 12, 31)
    assert result.sex == "female"
    assert result.region == "110105"


@pytest.mark.parametrize("position", range(17))
def test_every_single_digit_change_breaks_the_checksum(position: int) -> None:
    """MOD 11-2 detects every single-digit substitution; the date/region rules may fire too."""
    for digit in "0123456789":
        if digit == PUBLISHED[position]:
            continue
        mutated = PUBLISHED[:position] + digit + PUBLISHED[position + 1 :]
        assert "checksum" in check_citizen_id(mutated).problems, mutated


def test_check_character_changes_and_swaps() -> None:
    for check in "0123456789":
        assert check_citizen_id(PUBLISHED[:17] + check).problems == ("checksum",)
    swapped = PUBLISHED[:15] + PUBLISHED[16] + PUBLISHED[15] + PUBLISHED[17:]  # ...002X -> ...020X
    assert swapped != PUBLISHED and "checksum" in check_citizen_id(swapped).problems


def test_format_and_normalisation() -> None:
    assert check_citizen_id("11010519491231002").problems == ("format",)
    assert check_citizen_id("1101051949123100ZX").problems == ("format",)
    assert normalize_citizen_id(" １１０１０５１９４９１２３１００２ｘ ") == PUBLISHED
    assert check_citizen_id("11010519491231002x").valid


def test_birth_date_region_and_record_mismatches() -> None:
    impossible = "110105" + "20001332" + "002"
    assert check_citizen_id(impossible + check_digit(impossible)).problems == ("birth-date",)
    bad_region = "99" + PUBLISHED[2:17]
    assert check_citizen_id(bad_region + check_digit(bad_region)).problems == ("region",)
    result = check_citizen_id(PUBLISHED, birth_date=date(1949, 12, 30), sex="male")
    assert result.problems == ("birth-date-mismatch", "sex-mismatch")


def test_make_citizen_id_round_trips() -> None:
    for sequence, sex in [(1, "male"), (1, "female"), (998, "female"), (999, "male")]:
        number = make_citizen_id("440305", date(1988, 2, 29), sequence, sex)
        result = check_citizen_id(number, birth_date=date(1988, 2, 29), sex=sex)
        assert result.valid, number
    with pytest.raises(ValueError):
        make_citizen_id("4403", date(1988, 1, 1), 1, "male")
    with pytest.raises(ValueError):
        check_digit("123")


def test_a_remembered_check_still_depends_on_the_day() -> None:
    """Checks without a record's birth date or sex are remembered per number and day: a number
    born on a date that is still to come is a problem until that day, and fine after it."""
    from rhip.fhir.identifiers import _check_number

    number = make_citizen_id("330402", date(2030, 1, 2), 123, "male")
    assert _check_number(number, date(2030, 1, 1)).problems == ("birth-date",)
    assert _check_number(number, date(2030, 1, 2)).valid
    assert check_citizen_id(number) == _check_number(number, date.today())
    assert check_citizen_id(number) is check_citizen_id(number)  # the second is not computed again
    with_record = check_citizen_id(PUBLISHED, birth_date=date(1949, 12, 30), sex="male")
    assert with_record.problems == ("birth-date-mismatch", "sex-mismatch")
