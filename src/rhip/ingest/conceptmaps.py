"""ConceptMaps that translate facilities' local codes to standard codes, held in the store.

The platform ships a set in ``rhip/ingest/data/conceptmaps/`` (one ConceptMap per local code system,
covering every local code the synthetic region generator uses); :func:`install_conceptmaps` writes
them to the store with fixed ids (re-installing is a no-op), and :func:`load_translator` builds the
in-memory translator from whatever ConceptMaps the store holds, so a region adds its own maps by
storing a ConceptMap, without touching code.
"""

from __future__ import annotations

import logging
from importlib import resources
from typing import Any

import orjson

from rhip.ingest.canonical import ConceptTranslator

log = logging.getLogger(__name__)


def shipped_conceptmaps() -> list[dict[str, Any]]:
    """The ConceptMaps shipped with the package."""
    from rhip.config import get_settings

    base = get_settings().identifier_base.rstrip("/").encode()
    folder = resources.files("rhip.ingest") / "data" / "conceptmaps"
    maps: list[dict[str, Any]] = []
    if not folder.is_dir():
        return maps
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            maps.append(orjson.loads(entry.read_bytes().replace(b"{base}", base)))
    return maps


def install_conceptmaps(store: Any, extra: list[dict[str, Any]] | None = None) -> int:
    """Write the shipped (and ``extra``) ConceptMaps to the store; returns how many were written."""
    maps = shipped_conceptmaps() + list(extra or [])
    if maps:
        store.bulk_write(maps)
    return len(maps)


def load_translator(store: Any) -> ConceptTranslator:
    """A translator from every current ConceptMap in the store (shipped ones if the store has none)."""
    translator = ConceptTranslator()
    found = 0
    try:
        for body, *_rest in store.iter_current("ConceptMap"):
            if body is not None:
                translator.add(body)
                found += 1
    except Exception:
        log.warning("could not read ConceptMaps from the store; using the shipped ones")
        found = 0
    if not found:
        for cm in shipped_conceptmaps():
            translator.add(cm)
    return translator
