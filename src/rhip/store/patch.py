"""JSON Patch (RFC 6902) for the FHIR ``patch`` interaction.

Operations are applied by the maintained ``jsonpatch`` library (add, remove, replace, move, copy,
test); this module only checks the document's shape and turns the library's failures into platform
errors: a malformed patch is a bad request (400), a patch that cannot be applied to this resource
(failed ``test``, missing path) is unprocessable (422). A patch may not change ``resourceType`` or
``id``. Messages name the operation index and JSON pointer, never values.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import jsonpointer

from rhip.errors import InvalidRequest, InvalidResource

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def check_operations(operations: object) -> list[dict[str, Any]]:
    """Validate the shape of a JSON Patch document; return it as a list of operations."""
    if not isinstance(operations, list):
        raise InvalidRequest("JSON Patch: the document must be an array of operations")
    for index, op in enumerate(operations):
        where = f"operation[{index}]"
        if not isinstance(op, dict):
            raise InvalidRequest(f"JSON Patch: {where} is not an object")
        if op.get("op") not in _OPS:
            raise InvalidRequest(f"JSON Patch: {where}.op must be one of {', '.join(sorted(_OPS))}")
        if not isinstance(op.get("path"), str):
            raise InvalidRequest(f"JSON Patch: {where}.path is missing")
        if op["op"] in ("add", "replace", "test") and "value" not in op:
            raise InvalidRequest(f"JSON Patch: {where} ({op['op']}) needs a value")
        if op["op"] in ("move", "copy") and not isinstance(op.get("from"), str):
            raise InvalidRequest(f"JSON Patch: {where} ({op['op']}) needs a from pointer")
    return operations


def apply_patch(resource: dict[str, Any], operations: object) -> dict[str, Any]:
    """Apply RFC 6902 ``operations`` to a copy of ``resource`` and return the patched resource.

    Raises InvalidRequest (400) for a malformed patch document and InvalidResource (422) when the
    patch does not apply (a ``test`` fails, a path does not exist) or it would change the
    resource's type or id.
    """
    ops = check_operations(operations)
    document: Any = copy.deepcopy(resource)
    for index, op in enumerate(ops):
        try:
            document = jsonpatch.JsonPatch([op]).apply(document, in_place=True)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise InvalidResource(
                f"JSON Patch: test operation[{index}] failed at {op['path']}", status=422
            ) from exc
        except jsonpatch.InvalidJsonPatch as exc:
            raise InvalidRequest(f"JSON Patch: operation[{index}] is invalid: {_reason(exc)}") from exc
        except (jsonpatch.JsonPatchConflict, jsonpointer.JsonPointerException) as exc:
            raise InvalidResource(
                f"JSON Patch: operation[{index}] ({op['op']}) cannot be applied at {op['path']}",
                status=422,
            ) from exc
    if not isinstance(document, dict):
        raise InvalidResource("JSON Patch: the result is not a resource", status=422)
    return document


def check_identity(original: dict[str, Any], patched: dict[str, Any]) -> None:
    """Refuse a patch that changed ``resourceType`` or ``id`` (422)."""
    for key in ("resourceType", "id"):
        if patched.get(key) != original.get(key):
            raise InvalidResource(f"JSON Patch: the patch may not change {key}", status=422)


def _reason(exc: Exception) -> str:
    """The library's reason, cut to its first line (it never contains document values)."""
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
