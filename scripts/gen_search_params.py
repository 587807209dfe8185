"""Derive the compact search-parameter table shipped in ``src/rhip/fhir/data/search_parameters.json``.

Reads the official FHIR R4 SearchParameter bundle and the StructureDefinitions (for element types)
from ``/work/shared/fhir-r4`` and compiles each FHIRPath expression into simple paths: JSON keys,
choice types expanded (``value.ofType(Quantity)`` -> ``valueQuantity``), ``where(resolve() is X)``
kept as a target-type filter and ``where(field='v')`` kept as an element filter. Expressions that do
not fit this form are left out and listed under ``excluded`` so the docs can name them.

Run by developers (the product never reads /work/shared):
    .venv/bin/python scripts/gen_search_params.py [--src /work/shared/fhir-r4]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "src/rhip/fhir/data/search_parameters.json"
DOC = ROOT / "docs/search-parameters.md"

#: Element types each search-parameter type can index (anything else is excluded with a reason).
SUPPORTED: dict[str, set[str]] = {
    "string": {"string", "markdown", "code", "uri", "url", "canonical", "id", "HumanName", "Address"},
    "token": {
        "code",
        "string",
        "id",
        "uri",
        "url",
        "canonical",
        "boolean",
        "Coding",
        "CodeableConcept",
        "Identifier",
        "ContactPoint",
        "System.String",
    },
    "date": {"date", "dateTime", "instant", "Period", "Timing"},
    "reference": {"Reference", "canonical", "uri", "url"},
    "quantity": {"Quantity", "Age", "Duration", "Distance", "Count", "SimpleQuantity", "Money", "Range"},
    "number": {"integer", "decimal", "positiveInt", "unsignedInt"},
    "uri": {"uri", "url", "canonical", "oid", "uuid"},
}
PRIMITIVES = {
    "string",
    "markdown",
    "code",
    "uri",
    "url",
    "canonical",
    "id",
    "boolean",
    "integer",
    "decimal",
    "positiveInt",
    "unsignedInt",
    "date",
    "dateTime",
    "instant",
    "time",
    "oid",
    "uuid",
    "base64Binary",
    "xhtml",
    "System.String",
}
COMMON_BASES = {"Resource", "DomainResource"}
#: Hand-compiled forms of expressions outside the subset (checked against the official text).
SPECIAL = {
    "Patient.deceased.exists() and Patient.deceased != false": [
        {"steps": ["deceasedBoolean"], "type": "boolean"},
        {"steps": ["deceasedDateTime"], "type": "dateTime", "const": "true"},
    ],
}
#: Parameters left out on purpose: indexing them as the expression says would match wrongly.
LEFT_OUT: dict[str, str] = {}
#: Parameters matched by a phonetic key instead of the text ("pinyin": Chinese characters become
#: toneless pinyin, so 张三, Zhang San and ZHANGSAN share a key).
ALGORITHM = {"phonetic": "pinyin"}
#: Parameters the search engine answers from the resource table itself.
BUILTIN = {"_id", "_lastUpdated"}


class Unsupported(Exception):
    """The expression uses FHIRPath outside the compiled subset."""


def _load_sds(src: Path) -> dict[str, dict[str, dict[str, Any]]]:
    sds: dict[str, dict[str, dict[str, Any]]] = {}
    for name in ("profiles-types.json", "profiles-resources.json"):
        bundle = json.loads((src / name).read_text())
        for entry in bundle["entry"]:
            res = entry["resource"]
            if res.get("resourceType") != "StructureDefinition" or "snapshot" not in res:
                continue
            if res.get("derivation") == "constraint" and res["type"] not in ("SimpleQuantity",):
                continue
            sds[res["id"]] = {el["path"]: el for el in res["snapshot"]["element"]}
    return sds


def _split_top(text: str, sep: str) -> list[str]:
    parts, depth, cur, i = [], 0, "", 0
    while i < len(text):
        ch = text[i]
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if depth == 0 and text.startswith(sep, i):
            parts.append(cur)
            cur, i = "", i + len(sep)
            continue
        cur += ch
        i += 1
    parts.append(cur)
    return [p.strip() for p in parts]


def _steps(expr: str) -> list[str]:
    expr = expr.strip()
    while expr.startswith("("):
        # "(A.b.ofType(T)).text" -> "A.b.ofType(T).text"
        depth = 0
        close = len(expr) - 1
        for pos, ch in enumerate(expr):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                close = pos
                break
        expr = expr[1:close] + expr[close + 1 :]
    m = re.fullmatch(r"(.+?) as ([A-Za-z]+)", expr)
    if m:
        expr = f"{m.group(1)}.ofType({m.group(2)})"
    return _split_top(expr, ".")


def _type_codes(el: dict[str, Any]) -> list[str]:
    out = []
    for t in el.get("type", []):
        code = t["code"]
        out.append("System.String" if code.startswith("http://hl7.org/fhirpath/") else code)
    return out


def _compile(sds: dict, res_type: str, steps: list[str], start: dict | None = None) -> list[dict[str, Any]]:
    """Compile steps (after the leading type name) against ``res_type``; returns typed paths."""
    root: dict[str, Any] = {"steps": [], "sd": res_type, "ctx": res_type, "type": None}
    branches: list[dict[str, Any]] = [start or root]
    for step in steps:
        new: list[dict[str, Any]] = []
        of = re.fullmatch(r"(?:ofType|as)\(([A-Za-z]+)\)", step)
        wr = re.fullmatch(r"where\(resolve\(\) is ([A-Za-z]+)\)", step)
        wf = re.fullmatch(r"where\(([a-z]+)\s*=\s*'([^']*)'\)", step)
        for b in branches:
            if of:
                want = of.group(1)
                want = {"DateTime": "dateTime"}.get(want, want)
                if b["type"] == want or b.get("choice_type") == want:
                    new.append(b)
                continue
            if wr:
                if b["type"] not in ("Reference",):
                    raise Unsupported(f"resolve() on {b['type']}")
                new.append({**b, "is": wr.group(1)})
                continue
            if wf:
                new.append({**b, "steps": [*b["steps"], {"where": [wf.group(1), wf.group(2)]}]})
                continue
            if not re.fullmatch(r"[a-zA-Z]+", step):
                raise Unsupported(f"step {step!r}")
            new.extend(_child(sds, b, step))
        branches = new
    if start is not None:
        return branches
    out = []
    for b in branches:
        if b["type"] is None:
            raise Unsupported("expression selects the resource itself")
        item: dict[str, Any] = {"steps": b["steps"], "type": b["type"]}
        if "is" in b:
            item["is"] = b["is"]
        out.append(item)
    return out


def _child(sds: dict, b: dict[str, Any], name: str) -> list[dict[str, Any]]:
    elems = sds.get(b["sd"])
    if elems is None:
        raise Unsupported(f"no definition for {b['sd']}")
    path = f"{b['ctx']}.{name}"
    el = elems.get(path)
    choice = False
    if el is None:
        el = elems.get(path + "[x]")
        choice = el is not None
    if el is None:
        raise Unsupported(f"unknown element {path}")
    if "contentReference" in el:
        ref = el["contentReference"].lstrip("#")
        return [{"steps": [*b["steps"], name], "sd": b["sd"], "ctx": ref, "type": "BackboneElement"}]
    out = []
    for code in _type_codes(el):
        key = name + code[0].upper() + code[1:] if choice else name
        nb: dict[str, Any] = {"steps": [*b["steps"], key], "type": code}
        if choice:
            nb["choice_type"] = code
        if code in ("BackboneElement", "Element"):
            nb.update(sd=b["sd"], ctx=path)
        elif code in PRIMITIVES:
            nb.update(sd=None, ctx=None)
        else:
            nb.update(sd=code, ctx=code)
        out.append(nb)
    return out


def _resource_types(sds: dict) -> list[str]:
    return sorted(
        n
        for n, els in sds.items()
        if n in els
        and _type_codes(els[n]) == []
        and n[0].isupper()
        and any(p.startswith(n + ".") for p in els)
        and f"{n}.meta" in els
        and n not in COMMON_BASES
    )


def _compile_param(sds, res_type, sp, part_exprs, excluded) -> dict[str, Any] | None:
    ptype = sp["type"]
    paths: list[dict[str, Any]] = []
    for part in part_exprs:
        if part in SPECIAL:
            paths.extend(SPECIAL[part])
            continue
        steps = _steps(part)
        try:
            compiled = _compile(sds, res_type, steps[1:])
        except Unsupported as exc:
            excluded.append(
                {"resource": res_type, "code": sp["code"], "expression": part, "reason": str(exc)}
            )
            continue
        for p in compiled:
            if p["type"] not in SUPPORTED.get(ptype, set()) and "const" not in p:
                excluded.append(
                    {
                        "resource": res_type,
                        "code": sp["code"],
                        "expression": part,
                        "reason": f"{ptype} search on element type {p['type']}",
                    }
                )
                continue
            paths.append(p)
    if not paths:
        return None
    entry: dict[str, Any] = {
        "type": ptype,
        "expression": " | ".join(part_exprs),
        "paths": paths,
        "url": sp["url"],
    }
    if sp.get("target"):
        entry["targets"] = sorted(sp["target"])
    if sp["code"] in ALGORITHM:
        entry["algorithm"] = ALGORITHM[sp["code"]]
    return entry


def _composite(sds, res_type, sp, by_url, excluded) -> dict[str, Any] | None:
    """Compile a two-component composite (first component token); others are excluded."""

    def fail(reason: str) -> None:
        excluded.append(
            {"resource": res_type, "code": sp["code"], "expression": sp.get("expression"), "reason": reason}
        )

    comps = sp.get("component", [])
    kinds = [by_url.get(c["definition"], {}).get("type") for c in comps]
    if len(comps) != 2 or kinds[0] != "token" or kinds[1] not in ("token", "quantity", "string", "date"):
        fail("composite of " + "+".join(str(k) for k in kinds))
        return None
    contexts = []
    for part in _split_top(sp["expression"], "|"):
        try:
            root: dict[str, Any] = {"steps": [], "sd": res_type, "ctx": res_type, "type": None}
            contexts.extend(_compile(sds, res_type, _steps(part)[1:], start=root))
        except Unsupported as exc:
            fail(str(exc))
            return None
    out_ctx = []
    for ctx in contexts:
        start = {"steps": [], "sd": ctx["sd"], "ctx": ctx["ctx"], "type": ctx["type"]}
        comp_paths = []
        for c, kind in zip(comps, kinds, strict=True):
            paths: list[dict[str, Any]] = []
            for part in _split_top(c["expression"], "|"):
                try:
                    bs = _compile(sds, res_type, _steps(part), start=dict(start))
                except Unsupported as exc:
                    fail(str(exc))
                    return None
                paths.extend(
                    {"steps": b["steps"], "type": b["type"]} for b in bs if b["type"] in SUPPORTED[kind]
                )
            comp_paths.append({"type": kind, "paths": paths})
        if all(cp["paths"] for cp in comp_paths):
            out_ctx.append({"steps": ctx["steps"], "components": comp_paths})
    if not out_ctx:
        fail("composite components select no indexable element")
        return None
    return {"type": "composite", "expression": sp["expression"], "contexts": out_ctx, "url": sp["url"]}


def build(src: Path) -> dict[str, Any]:
    """Compile every SearchParameter of R4 into the derived table."""
    sds = _load_sds(src)
    bundle = json.loads((src / "search-parameters.json").read_text())
    params = [e["resource"] for e in bundle["entry"]]
    by_url = {p["url"]: p for p in params}
    types = _resource_types(sds)
    resources: dict[str, dict[str, Any]] = {t: {} for t in types}
    excluded: list[dict[str, Any]] = []
    for sp in params:
        code = sp["code"]
        if code in BUILTIN:
            continue
        expr = sp.get("expression")
        if code in LEFT_OUT:
            excluded.extend(
                {"resource": b, "code": code, "expression": expr, "reason": LEFT_OUT[code]}
                for b in sp["base"]
            )
            continue
        if sp["type"] == "composite" and expr:
            for base in sp["base"]:
                comp = _composite(sds, base, sp, by_url, excluded)
                if comp is not None:
                    resources[base][code] = comp
            continue
        if sp["type"] == "special" or not expr:
            for base in sp["base"]:
                excluded.append(
                    {
                        "resource": base,
                        "code": code,
                        "expression": expr,
                        "reason": f"{sp['type']} parameter" if expr else "no expression",
                    }
                )
            continue
        parts = _split_top(expr, "|")
        for base in sp["base"]:
            targets = types if base in COMMON_BASES else [base]
            for rt in targets:
                own = [
                    p
                    for p in parts
                    if (p in SPECIAL and p.startswith(rt + ".")) or _steps(p)[0] in (rt, base)
                ]
                if not own:
                    continue
                if base in COMMON_BASES:
                    own = [rt + p[len(base) :] if p.startswith(base) else p for p in own]
                entry = _compile_param(
                    sds, rt, sp, own, excluded if base not in COMMON_BASES or rt == "Patient" else []
                )
                if entry is not None:
                    resources[rt][code] = entry
    return {
        "fhirVersion": "4.0.1",
        "source": "HL7 FHIR R4 search-parameters.json (CC0), compiled by scripts/gen_search_params.py",
        "resources": {k: dict(sorted(v.items())) for k, v in sorted(resources.items())},
        "excluded": excluded,
    }


def write_doc(data: dict[str, Any], path: Path) -> None:
    """Write the operator-facing list of indexed parameters and of what was left out."""
    lines = [
        "# Search parameters indexed per resource type",
        "",
        "Generated by `scripts/gen_search_params.py` from the FHIR R4 SearchParameter definitions and the",
        "platform's own (`src/rhip/fhir/data/platform_search_parameters.json`, marked *platform*); do not",
        "edit by hand. Every resource type also answers `_id` and `_lastUpdated`. Types in brackets:",
        "s string, t token, d date, r reference, q quantity, n number, u uri, c composite.",
        "",
        "| resource type | parameters |",
        "|---|---|",
    ]
    platform = _platform_params()
    for rt, params in data["resources"].items():
        names = [f"`{n}` ({p['type'][0]})" for n, p in params.items()]
        names += [f"`{n}` ({p['type'][0]}, *platform*)" for n, p in platform.get(rt, {}).items()]
        lines.append(f"| {rt} | {', '.join(names)} |")
    lines += [
        "",
        "## Added by the platform",
        "",
        "Indexed and searched like the official ones; the CapabilityStatement names each as",
        "`<identifier base>/SearchParameter/<type>-<code>`. Stores written before a parameter was added",
        "need `rhip db reindex --type <type>` for it to find older resources.",
        "",
        "| resource type | parameter | expression | why |",
        "|---|---|---|---|",
    ]
    for rt, params in platform.items():
        lines += [f"| {rt} | `{n}` | `{p['expression']}` | {p['description']} |" for n, p in params.items()]
    lines += [
        "",
        "## Left out",
        "",
        "These official parameters, or parts of their expressions, are not indexed (searching a left-out",
        "parameter answers 400 unknown parameter; a partly left-out one searches the listed paths only).",
        "",
        "| resource type | parameter | expression | reason |",
        "|---|---|---|---|",
    ]
    for e in data["excluded"]:
        expr = (e.get("expression") or "").replace("|", "\\|")
        lines.append(f"| {e['resource']} | `{e['code']}` | `{expr}` | {e['reason']} |")
    path.write_text("\n".join(lines) + "\n")


def _platform_params() -> dict[str, dict[str, Any]]:
    """The platform's own parameters (raw table), listed beside the official ones."""
    raw = json.loads((OUT.parent / "platform_search_parameters.json").read_text(encoding="utf-8"))
    platform: dict[str, dict[str, Any]] = raw["resources"]
    return platform


def main() -> None:
    """Entry point: write the derived table."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", type=Path, default=Path("/work/shared/fhir-r4"))
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    data = build(args.src)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, indent=1, ensure_ascii=False, sort_keys=False) + "\n")
    write_doc(data, DOC)
    n = sum(len(v) for v in data["resources"].values())
    print(
        f"wrote {args.out}: {len(data['resources'])} resource types, {n} parameters, "
        f"{len(data['excluded'])} excluded expressions"
    )


if __name__ == "__main__":
    main()
