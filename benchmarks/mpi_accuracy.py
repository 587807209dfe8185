"""Linkage accuracy against known truth: the generator's region (default) or the MPI's own sample.

Trains the model with Splink on the records, scores all blocked pairs once, then sweeps the link
threshold to draw the precision/recall curve (pairwise and B-cubed) and lists the confusion cases
that remain at the model's threshold.

    .venv/bin/python benchmarks/mpi_accuracy.py --residents 5000
    .venv/bin/python benchmarks/mpi_accuracy.py --residents 100000 --years 1 --out /tmp/region100k
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from rhip.mpi.batch import cluster_pairs, collect_features, scored_pairs, train
from rhip.mpi.evaluate import evaluate
from rhip.mpi.features import RecordFeatures
from rhip.mpi.model import MatchModel, load_model, score_pair
from rhip.mpi.protect import MpiSeal
from rhip.mpi.sample import sample_population


def _register_all_patients_writer() -> None:
    """A generator writer (through its public registry) emitting every source record as a Patient.

    The region's FHIR facilities are only part of it; HL7 v2 and CSV facilities reach the store
    through ingest. For accuracy alone, every source record is written as the Patient ingest would
    produce, so the benchmark covers all facilities without running ingest.
    """
    import orjson

    from rhip.synth.writers import WRITERS, Writer, register_writer
    from rhip.synth.writers.base import Buffer
    from rhip.synth.writers.fhir import patient_resource

    if "mpi-patients" in WRITERS:
        return

    @register_writer("mpi-patients")
    class _AllPatients(Writer):
        def render(self, lives: list[Any], chunk: int) -> dict[str, tuple[bytes, int]]:
            buf = Buffer()
            for life in lives:
                for source in life.sources:
                    buf.put("mpi/Patient.ndjson", orjson.dumps(patient_resource(source)) + b"\n")
            return buf.result()


def _read_patients(folder: Path) -> dict[str, dict[str, Any]]:
    patients: dict[str, dict[str, Any]] = {}
    if (folder / "mpi" / "Patient.ndjson").exists():
        for line in (folder / "mpi" / "Patient.ndjson").read_text(encoding="utf-8").splitlines():
            body = json.loads(line)
            patients[body["id"]] = body
        return patients
    for path in sorted((folder / "fhir").glob("*/Patient.ndjson")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                body = json.loads(line)
                patients[body["id"]] = body
    for path in sorted((folder / "fhir-bundles").glob("*/*.json")):
        for entry in json.loads(path.read_text(encoding="utf-8")).get("entry", []):
            res = entry.get("resource") or {}
            if res.get("resourceType") == "Patient" and res.get("id"):
                patients[res["id"]] = res
    return patients


def region_patients(folder: Path) -> tuple[list[dict[str, Any]], dict[str, str], dict[str, str]]:
    """Source Patients of a generated region (NDJSON and bundles), truth and noise labels by id."""
    patients = _read_patients(folder)
    truth: dict[str, str] = {}
    noise: dict[str, str] = {}
    with (folder / "truth" / "patient_links.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            if row["source_patient_id"] in patients:
                truth[row["source_patient_id"]] = row["resident_id"]
                noise[row["source_patient_id"]] = row["noise"]
    return [patients[i] for i in truth], truth, noise


def _label(ev: dict[str, tuple[str, float]]) -> str:
    return " ".join(f"{k}={v[0]}" for k, v in ev.items())


def confusions(
    pairs: list[tuple[str, str, float, float, str]], clusters: dict[str, int], truth: dict[str, str],
    by_id: dict[str, RecordFeatures], noise: dict[str, str], model: MatchModel,
) -> dict[str, list[tuple[str, int]]]:  # fmt: skip
    """Most frequent evidence patterns of false links and of missed links (with noise labels)."""
    weights = model.level_weights()
    wrong: Counter[str] = Counter()
    for left, right, *_ in pairs:
        if clusters[left] == clusters[right] and truth[left] != truth[right]:
            wrong[_label(score_pair(by_id[left], by_id[right], model, weights).evidence)] += 1
    missed: Counter[str] = Counter()
    members: dict[str, list[str]] = {}
    for rid, res in truth.items():
        members.setdefault(res, []).append(rid)
    for records in members.values():
        for i, a in enumerate(records):
            for b in records[i + 1 :]:
                if clusters[a] != clusters[b]:
                    ev = score_pair(by_id[a], by_id[b], model, weights).evidence
                    labels = {n for n in f"{noise.get(a, '')};{noise.get(b, '')}".split(";") if n}
                    missed[f"noise[{','.join(sorted(labels)) or '-'}] {_label(ev)}"] += 1
    return {"false links": wrong.most_common(8), "missed links": missed.most_common(8)}


def _seal() -> MpiSeal:
    """A seal with fresh keys in a temporary folder (the MPI's own keys are the store's)."""
    from rhip.security.crypto import FieldCipher
    from rhip.security.keys import KeyRing

    return MpiSeal(FieldCipher(KeyRing(Path(tempfile.mkdtemp(prefix="rhip-keys-")))))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--source", choices=("synth", "sample"), default="synth")
    parser.add_argument("--residents", type=int, default=5000)
    parser.add_argument("--years", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, help="Region folder (reused when it already holds a region).")
    parser.add_argument("--max-pairs", type=float, default=5e6)
    parser.add_argument("--save-model", type=Path, help="Write the trained model JSON here.")
    parser.add_argument(
        "--sealed", action="store_true", help="Seal the features (pseudonyms, as the MPI stores them)."
    )
    args = parser.parse_args()

    clock = time.perf_counter()
    noise: dict[str, str] = {}
    if args.source == "synth":
        folder = args.out or Path(tempfile.mkdtemp(prefix="rhip-region-"))
        if not (folder / "truth" / "patient_links.csv").exists():
            from rhip.synth import generate

            _register_all_patients_writer()
            generate(
                folder, residents=args.residents, years=args.years, seed=args.seed, formats=["mpi-patients"]
            )
        patients, truth, noise = region_patients(folder)
    else:
        patients, truth = sample_population(args.residents, seed=args.seed)
    made = time.perf_counter() - clock
    table = collect_features(patients, _seal() if args.sealed else None)
    clock = time.perf_counter()
    model = train(table, load_model(), max_pairs=args.max_pairs)
    trained = time.perf_counter() - clock
    if args.save_model:
        args.save_model.write_text(model.to_json(), encoding="utf-8")
    clock = time.perf_counter()
    pairs = scored_pairs(table, model, min_weight=-10.0)
    predicted = time.perf_counter() - clock
    ids = table.columns["unique_id"]
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"records {len(ids)}  true residents {len(set(truth.values()))}  pairs scored {len(pairs)}")
    print(f"data {made:.1f}s  train {trained:.1f}s  predict {predicted:.1f}s  peak RSS {rss:.0f} MB")
    print("\n| link weight | pair P | pair R | B3 P | B3 R | residents with a wrong link | split persons |")
    print("|---|---|---|---|---|---|---|")
    for threshold in (-4, -2, 0, 2, 4, 6, 8, 10, 12, 14, 16, 20):
        clusters, _, _ = cluster_pairs(ids, pairs, threshold)
        acc = evaluate({k: str(v) for k, v in clusters.items()}, truth)
        mark = " (model)" if threshold == model.link_weight else ""
        cells = (acc.pair_precision, acc.pair_recall, acc.bcubed_precision, acc.bcubed_recall)
        row = " | ".join(f"{c:.4f}" for c in cells)
        print(f"| {threshold}{mark} | {row} | {acc.wrong_link_share:.5f} | {acc.split_share:.5f} |")
    clusters, _, _ = cluster_pairs(ids, pairs, model.link_weight)
    acc = evaluate({k: str(v) for k, v in clusters.items()}, truth)
    print("\nat the model's link weight:", json.dumps(acc.as_dict()))
    by_id = {f.record_id: f for f in table.features}
    for kind, rows in confusions(pairs, clusters, truth, by_id, noise, model).items():
        print(f"\n{kind} (pairs, most frequent evidence patterns):")
        for text, count in rows:
            print(f"  {count:>6}  {text}")


if __name__ == "__main__":
    main()
