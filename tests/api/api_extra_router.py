"""A stand-alone module contributing a router, the way rhip.lake.api or rhip.mpi.api will."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI

router = APIRouter()
SETUP_CALLS: list[str] = []


@router.get("/extra/ping")
def ping() -> dict[str, str]:
    """Answer a ping."""
    return {"pong": "yes"}


@router.get("/fhir/$ping")
def fhir_ping() -> dict[str, str]:
    """A system-level operation under /fhir, which the generic /fhir/{type} routes must not shadow."""
    return {"resourceType": "Parameters"}


def setup(app: FastAPI) -> None:
    """Record that the app called setup."""
    SETUP_CALLS.append(app.title)
