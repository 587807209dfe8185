"""Orchestration of ``rhip generate``: skeleton, chunks of residents, writers, manifest.

The main process builds the region, the population skeleton and the outbreak plan; chunks of
residents are then generated (in up to ``workers`` processes) and their bytes appended in chunk
order, so memory stays bounded and the output is byte-identical for a seed.
"""

from __future__ import annotations

import csv
import io
import logging
import multiprocessing
import random
import shutil
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import orjson

from rhip.synth.clinical import CHRONIC, LifeBuilder
from rhip.synth.identity import make_resident
from rhip.synth.model import Life, WearableStream
from rhip.synth.population import Skeleton, build_skeleton
from rhip.synth.reference import load_params, load_reference
from rhip.synth.region import build_region
from rhip.synth.writers import WRITERS, Writer
from rhip.synth.writers.base import Appends

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1.0"
DEFAULT_END = date(2026, 6, 30)
DEFAULT_FORMATS = ("fhir", "hl7v2", "csv", "dicom", "wearable", "claims")
CHUNK = 500


@dataclass
class Manifest:
    """What was generated: parameters, counts per file and generator version (manifest.json)."""

    seed: int
    residents: int
    years: int
    start: date
    end: date
    formats: list[str]
    files: dict[str, int] = field(default_factory=dict)
    facilities: int = 0
    generator_version: str = GENERATOR_VERSION

    def as_dict(self) -> dict[str, Any]:
        return {
            "generator": "rhip.synth",
            "generator_version": self.generator_version,
            "seed": self.seed,
            "residents": self.residents,
            "years": self.years,
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "formats": self.formats,
            "facilities": self.facilities,
            "files": dict(sorted(self.files.items())),
        }


def _window(end: date, years: int) -> tuple[date, date]:
    try:
        start = end.replace(year=end.year - years)
    except ValueError:
        start = end.replace(year=end.year - years, day=28)
    return start + timedelta(days=1), end


def _outbreak_plan(
    seed: int, residents: int, window: tuple[date, date], params: dict[str, Any], districts: list[str]
) -> list[dict[str, Any]]:
    """Outbreaks to inject: disease, district, ISO-week span and the per-person attack probability."""
    cfg = params["infectious"]
    rng = random.Random(f"{seed}:outbreaks")
    weights = params["city"]["district_weights"][: len(districts)]
    total_w = sum(weights)
    years = (window[1] - window[0]).days / 365.25
    n = max(1, round(cfg["outbreaks_per_year"] * years))
    first_monday = window[0] + timedelta(days=(7 - window[0].weekday()) % 7)
    weeks_total = (window[1] - first_monday).days // 7
    plan = []
    for i in range(n):
        disease = rng.choice(cfg["outbreak_diseases"])
        _code, per100k, _peak, _amp, group = cfg["diseases"][disease]
        d = rng.randrange(len(districts))
        n_weeks = rng.randint(*cfg["outbreak_weeks"])
        lo = min(weeks_total - n_weeks - 1, max(8, weeks_total // 3))
        w0 = rng.randint(lo, max(lo, weeks_total - n_weeks - 1))
        first = first_monday + timedelta(weeks=w0)
        last = first + timedelta(weeks=n_weeks, days=-1)
        share = 0.16 if group == "child" else 0.84 if group == "adult" else 1.0
        pop = residents * weights[d] / total_w * share
        factor = 4.0 if group == "child" else 1.0
        expected = per100k / 1e5 * factor * pop * n_weeks / 52.0
        extra = max(8.0, cfg["outbreak_extra_factor"] * expected)
        plan.append(
            {
                "id": i + 1,
                "disease": disease,
                "icd10": cfg["diseases"][disease][0],
                "district": districts[d],
                "first_day": first.toordinal(),
                "last_day": last.toordinal(),
                "p": min(0.5, extra / max(pop, 1.0)),
            }
        )
    return plan


_CTX: dict[str, Any] = {}


def _init_worker(ctx: dict[str, Any]) -> None:
    _CTX.clear()
    _CTX.update(ctx)
    _CTX["writers"] = [WRITERS[name](ctx["out"], ctx["region"], ctx) for name in ctx["writer_names"]]


def _wearable(life: Life, rng: random.Random, ctx: dict[str, Any]) -> WearableStream | None:
    cfg = ctx["params"]["wearable"]
    if not life.chronic or rng.random() >= ctx["wearable_p"] or life.resident.death is not None:
        return None
    r = life.resident
    end = ctx["window"][1]
    start_day = end - timedelta(days=int(cfg["days"]) - 1)
    from datetime import datetime

    start = datetime(start_day.year, start_day.month, start_day.day)
    minutes = int(cfg["days"]) * 1440
    episodes = []
    if rng.random() < cfg["deterioration_share"]:
        length = rng.randint(*cfg["deterioration_hours"]) * 60
        at = start + timedelta(minutes=rng.randint(120, minutes - length - 1))
        kind = rng.choice(["hypoxaemia", "tachycardia", "fever", "hypertensive-crisis"])
        episodes.append((at, at + timedelta(minutes=length), kind))
    from rhip.fhir import systems

    return WearableStream(
        f"WD{rng.getrandbits(40):010x}", r, (systems.HEALTH_CARD, r.health_card), start, minutes, episodes
    )


def _run_chunk(
    task: tuple[int, int, int, dict[str, Any], dict[int, list[tuple[int, int]]]],
) -> tuple[int, Appends, dict[int, int]]:
    chunk, start, stop, rows, births = task
    ctx = _CTX
    lives: list[Life] = []
    outbreak_cases: dict[int, int] = {}
    for k, index in enumerate(range(start, stop)):
        row = {f: int(col[k]) for f, col in rows.items()}
        rng = random.Random(f"{ctx['seed']}:r:{index}")
        resident = make_resident(
            index, row, ctx["seed"], ctx["region"], ctx["ref"], ctx["params"], ctx["window"], rng
        )
        life = LifeBuilder(resident, rng, ctx).build(ctx["plan"], births.get(index, []))
        life.wearable = _wearable(life, rng, ctx)
        for enc in life.encounters:
            if enc.outbreak is not None:
                outbreak_cases[enc.outbreak] = outbreak_cases.get(enc.outbreak, 0) + 1
        lives.append(life)
    appends: Appends = {}
    for writer in ctx["writers"]:
        appends.update(writer.render(lives, chunk))
    return chunk, appends, outbreak_cases


def _tasks(
    sk: Skeleton, births: dict[int, list[tuple[int, int]]]
) -> Iterator[tuple[int, int, int, dict[str, Any], dict[int, list[tuple[int, int]]]]]:
    n = len(sk)
    for chunk, start in enumerate(range(0, n, CHUNK)):
        stop = min(n, start + CHUNK)
        yield (
            chunk,
            start,
            stop,
            sk.slice(start, stop),
            {i: births[i] for i in range(start, stop) if i in births},
        )


def _births(sk: Skeleton, start: date) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {}
    lo = start.toordinal()
    for child in range(len(sk)):
        mother = int(sk.mother[child])
        if mother >= 0 and sk.birth[child] >= lo and (sk.twin[child] < 0 or sk.twin[child] > child):
            out.setdefault(mother, []).append((int(sk.birth[child]), child))
    return out


def generate(
    out_dir: Path,
    *,
    residents: int,
    years: int,
    seed: int,
    formats: Sequence[str] | None = None,
    end_date: date | None = None,
    progress: bool = False,
    workers: int = 1,
    params_file: Path | None = None,
) -> Manifest:
    """Generate a synthetic region into ``out_dir`` and return its manifest.

    Args:
        out_dir: output folder (created; the files of an earlier run in it are removed first, other
            files are left alone).
        residents: number of residents; years: length of the period ending at ``end_date``.
        seed: the same seed (and parameters) gives byte-identical output.
        formats: writers to run (default: fhir, hl7v2, csv, dicom, wearable, claims); truth and
            region files are always written.
        workers: processes generating chunks (output does not depend on it).
        params_file: YAML overriding keys of the default parameter file.

    Raises:
        ValueError: unknown format or non-positive sizes.
    """
    if residents < 1 or years < 1:
        raise ValueError("residents and years must be positive")
    names = list(formats or DEFAULT_FORMATS)
    unknown = [n for n in names if n not in WRITERS or n in ("truth",)]
    if unknown:
        raise ValueError(
            f"unknown format(s) {', '.join(unknown)}; known: {', '.join(sorted(set(WRITERS) - {'truth'}))}"
        )
    params, ref = load_params(params_file), load_reference()
    end = end_date or DEFAULT_END
    window = _window(end, years)
    region = build_region(seed, residents, params, ref)
    sk = build_skeleton(residents, seed, end, params, ref, region.districts)
    plan = _outbreak_plan(seed, residents, window, params, region.districts)
    wcfg = params["wearable"]
    ctx: dict[str, Any] = {
        "seed": seed,
        "params": params,
        "ref": ref,
        "region": region,
        "window": window,
        "plan": plan,
        "out": out_dir,
        "writer_names": ["truth", *names],
        "wearable_p": min(
            float(wcfg["share_of_chronic"]), float(wcfg["max_devices"]) / max(1.0, residents * 0.3)
        ),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    _clear(out_dir)
    manifest = Manifest(
        seed, residents, years, window[0], window[1], names, facilities=len(region.facilities)
    )
    _write_region(out_dir, region, manifest)
    cases = _write_chunks(out_dir, ctx, sk, workers, progress, manifest)
    _write_outbreaks(out_dir, plan, cases, manifest)
    (out_dir / "manifest.json").write_bytes(
        orjson.dumps(manifest.as_dict(), option=orjson.OPT_INDENT_2) + b"\n"
    )
    return manifest


def _write_chunks(
    out_dir: Path, ctx: dict[str, Any], sk: Skeleton, workers: int, progress: bool, manifest: Manifest
) -> dict[int, int]:
    """Run every chunk and append its bytes in chunk order; returns outbreak cases per outbreak id."""
    residents, window = len(sk), ctx["window"]
    _init_worker(ctx)
    opened: dict[str, Any] = {}
    headers: dict[str, bytes] = {}
    for w in _CTX["writers"]:
        headers.update(w.headers())
    for path, head in headers.items():
        target = out_dir / path
        target.parent.mkdir(parents=True, exist_ok=True)
        opened[path] = target.open("wb")
        opened[path].write(head)
        manifest.files[path] = 0
    cases: dict[int, int] = {}
    try:
        for _chunk, appends, ob in _execute(ctx, sk, _births(sk, window[0]), workers, progress, residents):
            for path, (data, n) in appends.items():
                fh = opened.get(path)
                if fh is None:
                    target = out_dir / path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fh = opened[path] = target.open("wb")
                fh.write(data)
                manifest.files[path] = manifest.files.get(path, 0) + n
            for k, v in ob.items():
                cases[k] = cases.get(k, 0) + v
    finally:
        for fh in opened.values():
            fh.close()
    return cases


def _execute(
    ctx: dict[str, Any],
    sk: Skeleton,
    births: dict[int, list[tuple[int, int]]],
    workers: int,
    progress: bool,
    total: int,
) -> Iterator[tuple[int, Appends, dict[int, int]]]:
    tasks = _tasks(sk, births)
    bar: Any = None
    task_id: Any = None
    if progress:
        from rich.progress import Progress

        bar = Progress()
        bar.start()
        task_id = bar.add_task("residents", total=total)
    try:
        if workers <= 1:
            for task in tasks:  # a plain loop: map() would turn a StopIteration bug into silent truncation
                yield _advance(bar, task_id, _run_chunk(task))
        else:
            mp = multiprocessing.get_context("fork")
            with mp.Pool(workers, initializer=_init_worker, initargs=(ctx,)) as pool:
                # At most 2 chunks per worker in flight: results are taken in submission order, so
                # memory stays bounded even when writing the files is slower than generating them.
                pending: deque[Any] = deque()
                for task in tasks:
                    pending.append(pool.apply_async(_run_chunk, (task,)))
                    if len(pending) >= 2 * workers:
                        yield _advance(bar, task_id, pending.popleft().get())
                while pending:
                    yield _advance(bar, task_id, pending.popleft().get())
    finally:
        if bar is not None:
            bar.stop()


def _advance(
    bar: Any, task_id: Any, result: tuple[int, Appends, dict[int, int]]
) -> tuple[int, Appends, dict[int, int]]:
    if bar is not None:
        bar.advance(task_id, CHUNK)
    return result


#: Top-level names this generator writes; only these are removed before a new run.
OUTPUT_NAMES = (
    "manifest.json",
    "region",
    "fhir",
    "fhir-bundles",
    "hl7v2",
    "csv",
    "dicom",
    "wearable",
    "claims",
    "truth",
)


def _clear(out_dir: Path) -> None:
    """Remove the output of an earlier run (so no stale DICOM or device file survives), nothing else."""
    for name in OUTPUT_NAMES:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _write_region(out: Path, region: Any, manifest: Manifest) -> None:
    from rhip.synth.writers.fhir import region_resources

    folder = out / "region"
    folder.mkdir(parents=True, exist_ok=True)
    for rtype, items in region_resources(region).items():
        (folder / f"{rtype}.ndjson").write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in items))
        manifest.files[f"region/{rtype}.ndjson"] = len(items)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "code",
            "name",
            "tier",
            "district_code",
            "district",
            "native_system",
            "encoding",
            "beds",
            "departments",
        ]
    )
    for f in region.facilities:
        w.writerow(
            [
                f.code,
                f.name,
                f.tier,
                f.district,
                region.district_names[f.district],
                f.native,
                f.encoding,
                f.beds,
                ";".join(f.departments),
            ]
        )
    (folder / "facilities.csv").write_text(buf.getvalue(), encoding="utf-8")
    manifest.files["region/facilities.csv"] = len(region.facilities)


def _iso_week(ordinal: int) -> str:
    y, w, _ = date.fromordinal(ordinal).isocalendar()
    return f"{y}-W{w:02d}"


def _write_outbreaks(
    out: Path, plan: list[dict[str, Any]], cases: dict[int, int], manifest: Manifest
) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(
        [
            "outbreak_id",
            "disease",
            "icd10",
            "district_code",
            "first_week",
            "last_week",
            "first_day",
            "last_day",
            "extra_cases",
        ]
    )
    for ob in plan:
        w.writerow(
            [
                ob["id"],
                ob["disease"],
                ob["icd10"],
                ob["district"],
                _iso_week(ob["first_day"]),
                _iso_week(ob["last_day"]),
                date.fromordinal(ob["first_day"]).isoformat(),
                date.fromordinal(ob["last_day"]).isoformat(),
                cases.get(ob["id"], 0),
            ]
        )
    (out / "truth").mkdir(parents=True, exist_ok=True)
    (out / "truth" / "outbreaks.csv").write_text(buf.getvalue(), encoding="utf-8")
    readme = resources.files("rhip.synth.data").joinpath("truth_readme.txt").read_text(encoding="utf-8")
    (out / "truth" / "README.md").write_text(readme, encoding="utf-8")
    manifest.files["truth/outbreaks.csv"] = len(plan)


__all__ = ["CHRONIC", "DEFAULT_END", "DEFAULT_FORMATS", "Manifest", "Writer", "generate"]
