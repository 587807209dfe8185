"""Reference tables and parameters of the generator, loaded once from the package data folder.

Everything the model draws from (rates, names, codes, divisions) is data, not code, so a region can
recalibrate the generator by passing its own parameter file without touching the model.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_DATA = "rhip.synth.data"


def _text(name: str) -> str:
    return resources.files(_DATA).joinpath(name).read_text(encoding="utf-8")


def _rows(name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(_text(name).splitlines()))


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_params(path: Path | None = None) -> dict[str, Any]:
    """The default parameters, overlaid with the keys of ``path`` (a YAML file) when given."""
    params: dict[str, Any] = yaml.safe_load(_text("params.yaml"))
    if path is not None:
        try:
            override = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except OSError as exc:
            raise ValueError(f"{path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
            problem = getattr(exc, "problem", None)
            raise ValueError(f"{path} is not valid YAML{at}" + (f": {problem}" if problem else "")) from None
        if not isinstance(override, dict):
            raise ValueError(f"{path}: parameter file must be a mapping")
        params = _merge(params, override)
    return params


@dataclass(frozen=True)
class Reference:
    """Static tables shared by every resident: names, divisions, codes and lab tests."""

    surnames: tuple[str, ...]
    surname_weights: tuple[float, ...]
    given_male: tuple[str, ...]
    given_male_w: tuple[float, ...]
    given_female: tuple[str, ...]
    given_female_w: tuple[float, ...]
    homophones: dict[str, str]
    lookalikes: dict[str, str]
    traditional: dict[str, str]
    divisions: dict[str, dict[str, str]]
    county_codes: tuple[str, ...]
    towns: dict[str, tuple[str, ...]]
    labs: dict[str, dict[str, str]]
    schedule: tuple[dict[str, str], ...]
    notifiable: tuple[dict[str, str], ...]
    catalog: dict[str, Any]


# Simplified -> traditional forms of common name characters (繁体 noise); GBK encodes both.
_TRADITIONAL = dict(
    zip(
        "刘张陈杨黄赵吴孙马罗郑谢许韩冯邓萧蒋叶苏吕卢钟谭陆贾韦邹闫龙贺顾龚万钱严汤伟强军杰涛刚华红丽静艳凤兰颖鹏辉飞东晓宁国庆荣宝贵凯乐梦云洁鸿泽轩诗瑶铭阳诚帅",
        "劉張陳楊黃趙吳孫馬羅鄭謝許韓馮鄧蕭蔣葉蘇呂盧鍾譚陸賈韋鄒閆龍賀顧龔萬錢嚴湯偉強軍傑濤剛華紅麗靜艷鳳蘭穎鵬輝飛東曉寧國慶榮寶貴凱樂夢雲潔鴻澤軒詩瑤銘陽誠帥",
        strict=True,
    )
)


@functools.cache
def load_reference() -> Reference:
    """Read the package data tables (cached for the process)."""
    surnames = _rows("surnames.csv")
    given = _rows("given_chars.csv")
    male = [g for g in given if g["sex"] in ("male", "any")]
    female = [g for g in given if g["sex"] in ("female", "any")]
    confusable = _rows("confusable_chars.csv")
    divisions = {r["code"]: r for r in _rows("divisions.csv")}
    towns: dict[str, list[str]] = {}
    for row in _rows("towns.csv"):
        towns.setdefault(row["county_code"], []).append(row["name"])
    return Reference(
        surnames=tuple(r["surname"] for r in surnames),
        surname_weights=tuple(float(r["percent"]) for r in surnames),
        given_male=tuple(g["char"] for g in male),
        given_male_w=tuple(float(g["weight"]) for g in male),
        given_female=tuple(g["char"] for g in female),
        given_female_w=tuple(float(g["weight"]) for g in female),
        homophones={r["char"]: r["homophones"] for r in confusable if r["homophones"]},
        lookalikes={r["char"]: r["lookalikes"] for r in confusable if r["lookalikes"]},
        traditional=_TRADITIONAL,
        divisions=divisions,
        county_codes=tuple(c for c, r in divisions.items() if r["level"] == "county"),
        towns={k: tuple(v) for k, v in towns.items()},
        labs={r["loinc"]: r for r in _rows("lab_tests.csv")},
        schedule=tuple(_rows("immunization_schedule.csv")),
        notifiable=tuple(_rows("notifiable_diseases.csv")),
        catalog=yaml.safe_load(_text("catalog.yaml")),
    )
