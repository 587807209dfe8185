"""Validation throughput: resources/s for orjson.loads + validate_resource vs orjson.loads alone.

Ingest targets 20,000 resources/s end to end on 2 cores, so validation has to run well above
50,000 typical resources/s on one core. Inputs are serialised NDJSON lines, as ingest sees them:

* ``synthea``: every entry resource of the Synthea patient bundles in tests/data/synthea-r4
  (typical clinical records: Observation, Claim, Encounter, Immunization, ...);
* ``examples``: the official R4 examples in tests/data/fhir-r4-examples (rich, narrative-heavy).

Each mix is repeated to ``--count`` lines; every copy gets its own ids, identifier values, uuids,
dates and decimal values (codes and texts repeat, as in real data), so the validator's value caches
only help where real data would let them. ``cold`` clears the validator's value caches before the
pass (the first batch a worker sees); ``warm`` is the steady state; ``validate/s`` is the warm
rate with the parsing time taken out; ``refs/s`` is ``iter_references`` (used by the store and
ingest to rewrite ``urn:uuid`` references) over the same lines, parsing time taken out. Single
process, one core; rates use the process's CPU time (best of ``--repeat``), so other load on a
shared machine inflates them less than wall-clock time would.

    .venv/bin/python benchmarks/fhir_validate.py                 # 50k lines per mix
    .venv/bin/python benchmarks/fhir_validate.py --count 200000 --repeat 5
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from rhip.fhir import validation
from rhip.fhir.references import iter_references
from rhip.fhir.validation import validate_resource

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"


def _synthea() -> list[bytes]:
    lines: list[bytes] = []
    for path in sorted((DATA / "synthea-r4").glob("*.json")):
        bundle = orjson.loads(path.read_bytes())
        lines.extend(orjson.dumps(entry["resource"]) for entry in bundle.get("entry", []))
    return lines


def _examples() -> list[bytes]:
    paths = sorted((DATA / "fhir-r4-examples").glob("*.json"))
    return [orjson.dumps(orjson.loads(p.read_bytes())) for p in paths]


_DATE = re.compile(r"(\d{4})((-\d\d(-\d\d(T[\d:.]+(Z|[+-]\d\d:\d\d))?)?)?)")


def _vary(node: Any, copy: int, key: str = "", depth: int = 0) -> Any:
    """A distinct but equally valid copy: new resource ids, uuids, identifier values, dates, decimals."""
    if isinstance(node, dict):
        return {k: _vary(v, copy, k, depth + 1) for k, v in node.items()}
    if isinstance(node, list):
        return [_vary(v, copy, key, depth) for v in node]
    if isinstance(node, float):
        return round(node + copy * 0.001, 3)
    if not isinstance(node, str) or not copy:
        return node
    if node.startswith("urn:uuid:") and len(node) == 45:
        return f"{node[:-6]}{copy:06x}"
    match = _DATE.fullmatch(node)
    if match:  # move by whole leap cycles inside 1904-2019 so 29 February stays valid
        return f"{1904 + (int(match[1]) - 1904 + 4 * copy) % 116}{match[2]}"
    if ((key == "id" and depth == 1) or key == "value") and len(node) < 56:
        return f"{node}-{copy}"
    return node


def _best(run: Callable[[], int], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        run()
        best = min(best, time.process_time() - start)
    return best


def _clear_caches() -> None:
    validation._VALID_CODES.clear()
    validation._PARSED.clear()


def main() -> None:
    """Run the benchmark and print a results table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=50_000, help="NDJSON lines per mix")
    parser.add_argument("--repeat", type=int, default=3, help="passes per measurement (best is kept)")
    args = parser.parse_args()
    mixes = {"synthea": _synthea(), "examples": _examples()}
    header = (
        "mix",
        "lines",
        "avg bytes",
        "loads/s",
        "cold/s",
        "warm/s",
        "warm/loads",
        "validate/s",
        "refs/s",
    )
    print(f"{header[0]:<10} " + " ".join(f"{h:>10}" for h in header[1:]))
    for name, base in mixes.items():
        if not base:
            print(f"{name:<10} (no input files)")
            continue
        parsed = [orjson.loads(line) for line in base]
        lines = [
            orjson.dumps(_vary(resource, copy))
            for copy in range(args.count // len(base) + 1)
            for resource in parsed
        ][: args.count]
        invalid = sum(
            1 for line in lines if any(i.severity == "error" for i in validate_resource(orjson.loads(line)))
        )

        def loads_only(lines: list[bytes] = lines) -> int:
            for line in lines:
                orjson.loads(line)
            return len(lines)

        def loads_validate(lines: list[bytes] = lines) -> int:
            for line in lines:
                validate_resource(orjson.loads(line))
            return len(lines)

        def cold(lines: list[bytes] = lines) -> int:
            _clear_caches()
            return loads_validate(lines)

        def loads_references(lines: list[bytes] = lines) -> int:
            for line in lines:
                for _ in iter_references(orjson.loads(line)):
                    pass
            return len(lines)

        t_loads = _best(loads_only, args.repeat)
        t_refs = _best(loads_references, args.repeat)
        t_cold = _best(cold, args.repeat)
        t_warm = _best(loads_validate, args.repeat)
        n = len(lines)
        avg = sum(len(line) for line in base) // len(base)
        print(
            f"{name:<10} {n:>10} {avg:>10} {n / t_loads:>10,.0f} {n / t_cold:>10,.0f} "
            f"{n / t_warm:>10,.0f} {t_loads / t_warm:>10.2f} {n / max(t_warm - t_loads, 1e-9):>10,.0f} "
            f"{n / max(t_refs - t_loads, 1e-9):>10,.0f}"
            + (f"   ({invalid} lines have errors)" if invalid else "")
        )


if __name__ == "__main__":
    main()
