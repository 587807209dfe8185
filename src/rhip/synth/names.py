"""Chinese names and the typing noise real registration desks introduce into them.

Surnames follow national frequencies; given names are one or two characters drawn by sex. Noise
replaces one character by a homophone (同音字), a look-alike (形近字) or its traditional form.
"""

from __future__ import annotations

import random

from rhip.synth.reference import Reference


def draw_name(rng: random.Random, ref: Reference, sex: str, surname: str | None = None) -> tuple[str, str]:
    """A (surname, given name) pair; about 70% of given names have two characters."""
    if surname is None:
        surname = rng.choices(ref.surnames, weights=ref.surname_weights)[0]
    chars, weights = (
        (ref.given_male, ref.given_male_w) if sex == "male" else (ref.given_female, ref.given_female_w)
    )
    k = 2 if rng.random() < 0.7 else 1
    given = "".join(rng.choices(chars, weights=weights, k=k))
    return surname, given


def noisy_name(rng: random.Random, ref: Reference, name: str, kind: str) -> str | None:
    """``name`` with one character replaced as ``kind`` says, or None when no replacement exists."""
    table = {"homophone": ref.homophones, "lookalike": ref.lookalikes}.get(kind)
    positions = list(range(len(name)))
    rng.shuffle(positions)
    for pos in positions:
        ch = name[pos]
        if kind == "traditional":
            alt = ref.traditional.get(ch)
            if alt:
                return name[:pos] + alt + name[pos + 1 :]
            continue
        options = table.get(ch, "") if table is not None else ""
        if options:
            return name[:pos] + rng.choice(options) + name[pos + 1 :]
    return None
