"""Shipped terminology: ICD-10/ICD-9-CM-3 displays, lab tests, notifiable diseases, FHIR resources."""

from __future__ import annotations

from datetime import date
from importlib import resources

import pytest

from rhip.fhir import (
    code_system,
    icd9cm3_display,
    icd10_display,
    lab_test,
    lab_tests,
    lab_tests_value_set,
    notifiable_disease_for_icd10,
    notifiable_diseases,
    systems,
    validate_resource,
)
from rhip.fhir.terminology import icd10_codes, icd10_insurance_code


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("I10.x00x002", "高血压"),
        ("i10.X00X002", "高血压"),
        ("E11.900", "2型糖尿病"),
        ("E11.9", "2型糖尿病"),
        ("I63.900", "脑梗死"),
        ("A00.000", "霍乱，由于O1群霍乱弧菌，霍乱生物型所致"),
    ],
)
def test_icd10_display(code: str, name: str) -> None:
    assert icd10_display(code) == name


def test_icd10_unknown_and_insurance_mapping() -> None:
    assert icd10_display("Q99.999x999") is None
    assert icd10_display("") is None
    assert icd10_insurance_code("A00.000") == "A00.000"
    assert len(icd10_codes()) == 33304


def test_icd9cm3_display() -> None:
    assert icd9cm3_display("36.0601") == "冠状动脉药物涂层支架置入术"
    assert icd9cm3_display("74.1x01") == "剖宫产术，子宫下段横切口"
    assert icd9cm3_display("99.9999") is None


def test_lab_tests() -> None:
    tests = lab_tests()
    assert len(tests) == 64
    hb = lab_test("718-7")
    assert hb is not None and hb.name_zh == "血红蛋白" and hb.unit == "g/L"
    male, female = hb.reference_range("male"), hb.reference_range("female")
    assert male is not None and (male.low, male.high) == (130.0, 175.0)
    assert female is not None and (female.low, female.high) == (115.0, 150.0)
    wbc = lab_test("6690-2")
    assert wbc is not None and wbc.reference_range("female") == wbc.reference_range("all")
    assert lab_test("0000-0") is None


def test_forty_notifiable_diseases() -> None:
    current = [d for d in notifiable_diseases() if d.parent is None]
    assert len(current) == 40
    by_class = {c: sum(1 for d in current if d.legal_class == c) for c in ("甲类", "乙类", "丙类")}
    assert by_class == {"甲类": 2, "乙类": 27, "丙类": 11}
    codes = [d.code for d in notifiable_diseases(include_monitored=True)]
    assert len(codes) == len(set(codes))
    assert {"plague", "cholera", "covid-19"} <= set(codes)


@pytest.mark.parametrize(
    ("code", "name"),
    [
        ("A00.000", "霍乱"),
        ("B16.900", "乙型肝炎"),
        ("B18.100", "乙型肝炎"),
        ("B18.200", "丙型肝炎"),
        ("B19.900", "未分型肝炎"),
        ("A15.000x010", "肺结核"),
        ("A16.200", "肺结核"),
        ("J09.x00", "人感染新亚型流感"),
        ("J10.100", "流行性感冒"),
        ("U07.100", "新型冠状病毒感染"),
        ("Z21.x00", "艾滋病"),
        ("A97.000", "登革热"),
        ("A01.000x003+G01*", "伤寒和副伤寒"),
    ],
)
def test_notifiable_disease_for_icd10(code: str, name: str) -> None:
    disease = notifiable_disease_for_icd10(code)
    assert disease is not None and disease.name_zh == name


def test_not_notifiable_and_history() -> None:
    assert notifiable_disease_for_icd10("I10.x00x002") is None
    assert notifiable_disease_for_icd10("A16.300") is None  # extrapulmonary: not 肺结核
    assert notifiable_disease_for_icd10("B01.900") is None
    varicella = notifiable_disease_for_icd10("B01.900", include_monitored=True)
    assert varicella is not None and varicella.legal_class == "其他监测"
    old = notifiable_disease_for_icd10("J09.x00", on=date(2020, 1, 1))
    assert old is not None and old.name_zh != "人感染新亚型流感" and old.valid_to == "2025-08-31"
    h1n1 = [d.name_zh for d in notifiable_diseases(on=date(2010, 6, 1))]
    assert "甲型H1N1流感" in h1n1 and "新型冠状病毒感染" not in h1n1


@pytest.mark.parametrize("name", ["icd10-cn", "icd9cm3-cn", "notifiable-disease"])
def test_code_systems_are_valid_resources(name: str) -> None:
    resource = code_system(name)
    assert validate_resource(resource) == []
    assert resource["count"] == len(resource["concept"])
    assert resource["url"] in {systems.ICD10_CN, systems.ICD9CM3_CN, systems.NOTIFIABLE_DISEASE}


def test_code_system_concepts_and_unknown_name() -> None:
    icd = code_system("icd10-cn")
    concept = next(c for c in icd["concept"] if c["code"] == "I10.x00x002")
    assert concept["display"] == "高血压"
    with pytest.raises(KeyError):
        code_system("snomed")


def test_lab_value_set_carries_loinc_notice() -> None:
    value_set = lab_tests_value_set()
    assert validate_resource(value_set) == []
    assert value_set["url"] == systems.COMMON_LAB_TESTS
    assert "loinc.org/license" in value_set["copyright"]
    include = value_set["compose"]["include"][0]
    assert include["system"] == systems.LOINC and len(include["concept"]) == 64


def test_loinc_notice_ships_with_the_package_data() -> None:
    """The LOINC licence requires its notice wherever LOINC content is distributed."""
    notice = resources.files("rhip.fhir").joinpath("data", "terminology", "NOTICE.txt").read_text("utf-8")
    assert "http://loinc.org/license" in notice and "Regenstrief" in notice
