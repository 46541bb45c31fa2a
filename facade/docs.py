"""GET /docs: the OpenAPI document rendered by Swagger UI, served by the facade itself.

The assets come from the swagger-ui-bundle package (pinned in pyproject.toml's facade group), so
the page loads nothing from a CDN and its policy allows scripts, styles and fetches from this
origin only: no inline script runs (the page's one setting, where the document is, lives in
/docs/init.js) and nothing is evaluated.
"""

from flask import Blueprint, Response, render_template, send_from_directory
from swagger_ui_bundle import swagger_ui_path
from werkzeug.exceptions import NotFound

bp = Blueprint("docs", __name__)

# What the page loads of the bundle; anything else under /docs/ is 404.
ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js", "favicon-32x32.png", "favicon-16x16.png"})
ASSET_MAX_AGE_S = 3600
# Swagger UI sets styles through the DOM (not subject to the policy) and may show data: icons;
# everything else is this origin's (tests/integration/test_browser.py counts violations: none).
DOCS_CSP = (
    "default-src 'none'; "
    "script-src 'self'; "
    "style-src 'self'; "
    "img-src 'self' data:; "
    "connect-src 'self'; "
    "form-action 'none'; "
    "base-uri 'none'; "
    "frame-ancestors 'none'"
)
# Relative to /docs, so the page finds the document behind a path prefix too. Only the token the
# user typed into Authorize is sent (the page keeps it in memory, never in storage).
INIT_JS = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: false,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    persistAuthorization: false
  });
});
"""


@bp.get("/docs")
def docs_page():
    """Return the Swagger UI page for /openapi.json."""
    html = render_template("docs.html")
    return html, 200, {"Content-Security-Policy": DOCS_CSP, "Cache-Control": "no-store"}


@bp.get("/docs/init.js")
def docs_init():
    """Return the script that starts Swagger UI on this service's document."""
    return Response(INIT_JS, mimetype="text/javascript", headers={"Cache-Control": f"max-age={ASSET_MAX_AGE_S}"})


@bp.get("/docs/<name>")
def docs_asset(name: str):
    """Return one of the bundle's assets the page loads, or 404."""
    if name not in ASSETS:
        raise NotFound()
    return send_from_directory(swagger_ui_path, name, max_age=ASSET_MAX_AGE_S)
