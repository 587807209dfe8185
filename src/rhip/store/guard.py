"""Write guards: a caller's last word on a write, inside the write's own transaction.

Some rules can only be checked against what is stored at the moment of writing: a facility's feed
may update only records that are its facility's *now*, and the record a conditional update or a
bundle entry targets is only known once the store has resolved it. A :data:`WriteGuard` passed to
a :class:`rhip.store.Store` write is called once per resource version about to be written, after
the target is resolved and (in bundles) placeholder and conditional references are rewritten, and
before anything is changed. Raising any :class:`rhip.errors.RhipError` refuses the write; the
transaction is then rolled back (a batch entry gets that error as its response). The store itself
knows nothing of who is writing: the guard carries that.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Interaction names of the HTTP methods a write is recorded with.
METHOD_INTERACTION = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


@dataclass(frozen=True)
class WriteCheck:
    """One version about to be written, as a guard sees it.

    Attributes:
        method: ``POST``, ``PUT``, ``PATCH`` or ``DELETE`` (as recorded in the history).
        res_type: the resource type.
        res_id: the resource id (None for a create checked before its id is assigned).
        stored: the current version (plaintext), or None when there is none or it is deleted.
        new: the body to be written, or None for a delete.
        read: reads a current resource inside the write's transaction (sees what an earlier entry
            of the same transaction wrote); None when the check runs outside a transaction.
    """

    method: str
    res_type: str
    res_id: str | None
    stored: dict[str, Any] | None
    new: dict[str, Any] | None
    read: Callable[[str, str], dict[str, Any]] | None = None

    @property
    def interaction(self) -> str:
        """The FHIR interaction this write is (``create``, ``update``, ``patch``, ``delete``)."""
        return METHOD_INTERACTION.get(self.method, self.method.lower())


#: Called before each version is written; raises to refuse it.
WriteGuard = Callable[[WriteCheck], None]
