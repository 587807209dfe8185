"""The Fellegi–Sunter model: level weights, the twin rule, and Python/Splink agreement."""

from __future__ import annotations

from datetime import date

from mpi_helpers import patient

from rhip.fhir.identifiers import make_citizen_id
from rhip.mpi.features import extract_features
from rhip.mpi.model import MatchModel, auto_link_allowed, load_model, score_pair


def _score(a: dict, b: dict) -> tuple[float, dict]:
    model = load_model()
    s = score_pair(extract_features(a), extract_features(b), model, model.level_weights())
    return s.weight, s.evidence


def test_homophone_name_scores_as_a_link() -> None:
    model = load_model()
    w, ev = _score(
        patient("a", ("张", "伟"), "1985-03-07", "male", phone="13800000001"),
        patient("b", ("张", "威"), "1985-03-07", "male", phone="13800000001"),
    )
    assert ev["name"][0] == "pinyin-exact"
    assert w >= model.link_weight and auto_link_allowed(ev)


def test_day_month_swap_still_links() -> None:
    model = load_model()
    w, ev = _score(
        patient("a", ("王", "芳"), "1979-04-11", "female", phone="13900000002", address="历下区经十路1号"),
        patient("b", ("王", "芳"), "1979-11-04", "female", phone="13900000002"),
    )
    assert ev["birth_date"][0] == "day-month-swap"
    assert w >= model.link_weight


def test_one_digit_id_typo_is_evidence(zhang_wei_cid: str) -> None:
    typo = zhang_wei_cid[:12] + ("9" if zhang_wei_cid[12] != "9" else "8") + zhang_wei_cid[13:]
    _w, ev = _score(
        patient("a", ("张", "伟"), "1985-03-07", "male", cid=zhang_wei_cid),
        patient("b", ("张", "伟"), "1985-03-07", "male", cid=typo),
    )
    assert ev["citizen_id"][0] == "one-edit" and ev["citizen_id"][1] > 5


def test_twins_are_not_auto_linked() -> None:
    """Twins share surname, birth date, phone and address; their given names differ."""
    born = date(2010, 6, 1)
    a = patient("a", ("刘", "文涛"), born.isoformat(), "male", phone="13700000003", address="历下区解放路5号")
    b = patient("b", ("刘", "文杰"), born.isoformat(), "male", phone="13700000003", address="历下区解放路5号")
    w, ev = _score(a, b)
    assert not auto_link_allowed(ev)
    a["identifier"] = [
        {"system": "urn:oid:2.16.156.10011.1.3", "value": make_citizen_id("370102", born, 11, "male")}
    ]
    b["identifier"] = [
        {"system": "urn:oid:2.16.156.10011.1.3", "value": make_citizen_id("370102", born, 13, "male")}
    ]
    w2, ev2 = _score(a, b)
    assert ev2["citizen_id"][0] == "both-valid-differ" and w2 < w


def test_model_json_round_trip() -> None:
    model = load_model()
    again = MatchModel.from_json(model.to_json())
    assert again.mu == model.mu and again.link_weight == model.link_weight


def test_python_and_splink_give_the_same_weights() -> None:
    """The real-time scorer and Splink's SQL must agree pair by pair (same model, same levels)."""
    from rhip.mpi.batch import _linker, collect_features
    from rhip.mpi.sample import sample_population

    patients, _ = sample_population(300, seed=11)
    table = collect_features(patients)
    model = load_model()
    weights = model.level_weights()
    linker = _linker(table, model, "duckdb", None)
    df = linker.inference.predict(threshold_match_weight=-1000, warning_mode="never")
    rows = df.as_duckdbpyrelation().project("unique_id_l, unique_id_r, match_weight").fetchall()
    by_id = {f.record_id: f for f in table.features}
    assert len(rows) > 200
    for left, right, weight in rows:
        python = score_pair(by_id[left], by_id[right], model, weights).weight
        assert abs(python - weight) < 1e-3, (left, right)
