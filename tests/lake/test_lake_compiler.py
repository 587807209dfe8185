"""The ViewDefinition compiler as pure functions: SQL text, bound values, errors and lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

from rhip.errors import InvalidResource
from rhip.lake.compiler import compile_view
from rhip.lake.fhirpath import Binary, Call, Literal, Member, parse
from rhip.lake.library import load_views, view_names

VIEW = {
    "resourceType": "ViewDefinition",
    "resource": "Patient",
    "select": [
        {
            "column": [
                {"name": "id", "path": "id"},
                {"name": "official", "path": "name.where(use = 'x\\'y').family"},
            ]
        }
    ],
    "where": [{"path": "gender = 'female'"}],
}


def test_parser_precedence_and_functions() -> None:
    tree = parse("name.where(use = 'official').exists() and gender = 'male'")
    assert isinstance(tree, Binary) and tree.op == "and"
    assert isinstance(tree.left, Call) and tree.left.name == "exists"
    assert parse("a.b") == Member(Member(None, "a"), "b")
    assert parse("1.5") == Literal("decimal", "1.5")
    assert parse("@2020-01").kind == "date"  # type: ignore[union-attr]


@pytest.mark.parametrize("bad", ["@@", "name.", "name.where(", "a b", ""])
def test_parser_rejects_bad_syntax(bad: str) -> None:
    with pytest.raises(InvalidResource):
        parse(bad)


@pytest.mark.parametrize("dialect", ["duckdb", "spark"])
def test_literals_are_bound_not_spliced(dialect: str) -> None:
    compiled = compile_view(VIEW, dialect)
    assert "x'y" in compiled.params.values() and "female" in compiled.params.values()
    assert "female" not in compiled.sql and "x'y" not in compiled.sql
    assert compiled.column_names == ["id", "official"]


def test_simple_views_compile_without_unnesting() -> None:
    """A view without forEach stays a plain projection (the fast path the benchmarks measure)."""
    sql = compile_view(load_views()["vital_signs"], "duckdb").sql
    assert "unnest" not in sql
    sql = compile_view(load_views()["claim_item"], "duckdb").sql
    assert "unnest" in sql


@pytest.mark.parametrize(
    ("view", "message"),
    [
        ({"resource": "Patient"}, "select"),
        ({"resource": "patient", "select": [{"column": [{"name": "a", "path": "id"}]}]}, "resource"),
        ({"resource": "Patient", "select": [{"column": [{"name": "1a", "path": "id"}]}]}, "column name"),
        (
            {
                "resource": "Patient",
                "select": [{"column": [{"name": "a", "path": "id"}, {"name": "a", "path": "id"}]}],
            },
            "duplicate",
        ),
        (
            {"resource": "Patient", "select": [{"column": [{"name": "a", "path": "%nope"}]}]},
            "undefined constant",
        ),
        (
            {"resource": "Patient", "select": [{"column": [{"name": "a", "path": "id.frobnicate()"}]}]},
            "unsupported",
        ),
    ],
)
def test_invalid_views_name_the_problem(view: dict, message: str) -> None:
    with pytest.raises(InvalidResource, match=message):
        compile_view(view, "duckdb")


def test_every_library_view_compiles_for_both_engines() -> None:
    views = load_views()
    assert {
        "patient",
        "encounter",
        "condition",
        "observation",
        "vital_signs",
        "lab_results",
        "medication_request",
        "procedure",
        "immunization",
        "claim",
        "claim_item",
        "resident_link",
    } <= set(views)
    assert "patient_demographics" in view_names()
    for view in views.values():
        for dialect in ("duckdb", "spark"):
            assert compile_view(view, dialect).sql.startswith("SELECT")


def test_import_rhip_lake_does_not_import_pyspark() -> None:
    code = "import rhip.lake, rhip.lake.cli, rhip.lake.api, sys; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
