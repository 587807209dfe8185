"""HTML pages holding plotly figures, for people who would rather look than read.

One page layout serves every chart (an alert's series, data quality): a Jinja2 template with
each figure's JSON in a ``<script type="application/json">`` block and a small loader that hands
them to ``Plotly.newPlot``. The figure data is therefore plain JSON in the page (no inline code
besides the loader), and a page comes in two forms:

- **served** by the API: plotly.js and the loader are ``<script src>`` references to the API's
  ``/static`` routes (the whole page then runs under ``script-src 'self'``, see
  :data:`CONTENT_SECURITY_POLICY`), so 4 MB of plotly.js is fetched once and cached;
- **self-contained** (CLI ``--out``): plotly.js and the loader are inlined, so the file opens
  offline anywhere.

plotly.js always comes from the installed ``plotly`` package, never from a CDN. plotly and Jinja2
are imported on first use (``rhip --help`` stays light).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "LOADER_JS",
    "Chart",
    "plotly_js",
    "plotly_js_version",
    "render_page",
]

#: The loader: draws every figure block of the page into the element that follows it.
LOADER_JS = """(function () {
  document.querySelectorAll('script[type="application/json"].rhip-figure').forEach(function (block) {
    var fig = JSON.parse(block.textContent);
    var target = document.getElementById(block.dataset.target);
    Plotly.newPlot(target, fig.data, fig.layout, {responsive: true, displaylogo: false});
  });
})();
"""

#: CSP of a served chart page: scripts only from the API (plotly.js and the loader), no inline
#: code; plotly sets inline styles and draws its mode-bar icons as data: images.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

_TEMPLATE = """<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, "Noto Sans CJK SC", "Microsoft YaHei", sans-serif;
       margin: 1.5rem; color: #222; }
h1 { font-size: 1.3rem; margin: 0 0 .3rem; }
p.meta { color: #555; margin: 0 0 1rem; font-size: .9rem; }
div.rhip-chart { width: 100%; min-height: {{ height }}px; margin-bottom: 1.5rem; }
</style>
{% if inline %}<script>{{ plotly | safe }}</script>
{% else %}<script src="{{ plotly_src }}"></script>{% endif %}
</head>
<body>
<h1>{{ title }}</h1>
{% for line in meta %}<p class="meta">{{ line }}</p>
{% endfor %}
{% for chart in charts %}
<script type="application/json" class="rhip-figure" data-target="fig-{{ loop.index }}">
{{ chart.json | safe }}</script>
<div class="rhip-chart" id="fig-{{ loop.index }}"></div>
{% endfor %}
{% if inline %}<script>{{ loader | safe }}</script>
{% else %}<script src="{{ loader_src }}"></script>{% endif %}
</body>
</html>
"""


@dataclass(frozen=True)
class Chart:
    """One figure of a page: the plotly figure as a dict ({"data": [...], "layout": {...}})."""

    figure: dict[str, Any]

    @property
    def json(self) -> str:
        """The figure as JSON safe inside a ``<script>`` block (``<``, ``>``, ``&`` escaped)."""
        import plotly.io as pio

        text = pio.to_json(self.figure, validate=False)
        return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@functools.cache
def plotly_js() -> bytes:
    """plotly.min.js as shipped in the installed ``plotly`` package."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().encode("utf-8")


@functools.cache
def plotly_js_version() -> str:
    """The plotly.js version (used in the static URL so a new plotly is fetched again)."""
    from plotly.offline import get_plotlyjs_version

    return str(get_plotlyjs_version())


def asset_etag(body: bytes) -> str:
    """A strong ETag for a static asset."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


@functools.cache
def _template() -> Any:
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(_TEMPLATE)


def render_page(
    title: str,
    charts: Sequence[Chart],
    *,
    meta: Sequence[str] = (),
    static_base: str | None = None,
    height: int = 480,
) -> str:
    """A whole HTML page with ``charts``.

    Args:
        title: page heading and ``<title>``.
        charts: the figures, drawn in order.
        meta: short lines of context under the heading (escaped).
        static_base: URL the API serves ``/static`` under (``http://host:8080``): plotly.js and the
            loader are referenced there; None inlines both (a self-contained file).
        height: minimum height of each figure in pixels.
    """
    base = (static_base or "").rstrip("/")
    return str(
        _template().render(
            title=title,
            meta=list(meta),
            charts=list(charts),
            height=height,
            inline=static_base is None,
            plotly=plotly_js().decode("utf-8") if static_base is None else "",
            loader=LOADER_JS,
            plotly_src=f"{base}/static/plotly.min.js?v={plotly_js_version()}",
            loader_src=f"{base}/static/rhip-charts.js?v={asset_etag(LOADER_JS.encode())[1:9]}",
        )
    )
