"""Static assets of the chart pages: plotly.js (from the installed plotly package) and the loader.

Chart pages reference these instead of inlining 4 MB of plotly.js each. They hold no data, so
they are public paths (a page saved with curl and opened from a file still loads them without a
token). The URLs carry the version (``?v=``), so the answer may be cached for a year; an
``ETag`` answers revalidations with 304. plotly.js is gzip-compressed once per process and served
as such to clients that accept gzip.
"""

from __future__ import annotations

import functools
import gzip

from fastapi import APIRouter, Request
from starlette.responses import Response

from rhip.charts import LOADER_JS, asset_etag, plotly_js

router = APIRouter(tags=["static"])

#: Paths of the assets (public: see :data:`rhip.security.middleware.PUBLIC_PATHS`).
STATIC_PATHS = ("/static/plotly.min.js", "/static/rhip-charts.js")

_CACHE = "public, max-age=31536000, immutable"
_JS = "text/javascript; charset=utf-8"


@functools.cache
def _asset(name: str) -> tuple[bytes, bytes, str]:
    """(body, gzip body, ETag) of one asset, computed once."""
    body = plotly_js() if name == "plotly" else LOADER_JS.encode("utf-8")
    return body, gzip.compress(body, compresslevel=6, mtime=0), asset_etag(body)


def _serve(request: Request, name: str) -> Response:
    body, packed, etag = _asset(name)
    headers = {
        "Cache-Control": _CACHE,
        "ETag": etag,
        "X-Content-Type-Options": "nosniff",
        "Vary": "Accept-Encoding",
    }
    if etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if "gzip" in request.headers.get("accept-encoding", ""):
        return Response(packed, media_type=_JS, headers={**headers, "Content-Encoding": "gzip"})
    return Response(body, media_type=_JS, headers=headers)


@router.get(STATIC_PATHS[0], include_in_schema=False)
def get_plotly(request: Request) -> Response:
    """plotly.min.js of the installed plotly package."""
    return _serve(request, "plotly")


@router.get(STATIC_PATHS[1], include_in_schema=False)
def get_loader(request: Request) -> Response:
    """The loader that draws a chart page's figures."""
    return _serve(request, "loader")
