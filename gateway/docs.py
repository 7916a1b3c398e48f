"""``/docs``: Swagger UI over ``/openapi.json``, every asset served by the gateway itself.

The assets come from an installed Python package (``swagger-ui-bundle-v2``), so
the page works offline and loads nothing from a CDN. Only the files the page
needs are served (:data:`ASSETS`); anything else under ``/docs/`` is a 404 in
the one error shape.
"""

import hashlib
from functools import cache

from swagger_ui_bundle import swagger_ui_path
from werkzeug import exceptions as http
from werkzeug.wrappers import Response

# the files of the bundle the page uses, by the media type they are served with
ASSETS = {
    "swagger-ui.css": "text/css",
    "index.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-standalone-preset.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
INITIALIZER_NAME = "docs-initializer.js"
# every name /docs/<asset> serves, by media type (the OpenAPI document lists them)
ASSET_TYPES = {**ASSETS, INITIALIZER_NAME: "text/javascript"}
# assets change only with the package: a day in caches, revalidated by ETag after
ASSET_CACHE = "public, max-age=86400"
# the page itself is tiny and names the document: always revalidated
PAGE_CACHE = "no-cache"

# the initializer is a file of its own, not inline script, so that the page can
# run under a Content-Security-Policy without 'unsafe-inline'
INITIALIZER = """window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    tryItOutEnabled: false,
    persistAuthorization: false,
    presets: [SwaggerUIBundle.presets.apis, SwaggerUIStandalonePreset],
    plugins: [SwaggerUIBundle.plugins.DownloadUrl],
    layout: "StandaloneLayout",
    validatorUrl: null
  });
});
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>nameko-shop API</title>
  <link rel="stylesheet" href="/docs/swagger-ui.css">
  <link rel="stylesheet" href="/docs/index.css">
  <link rel="icon" type="image/png" href="/docs/favicon-32x32.png" sizes="32x32">
  <link rel="icon" type="image/png" href="/docs/favicon-16x16.png" sizes="16x16">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/swagger-ui-bundle.js" charset="UTF-8"></script>
  <script src="/docs/swagger-ui-standalone-preset.js" charset="UTF-8"></script>
  <script src="/docs/docs-initializer.js" charset="UTF-8"></script>
</body>
</html>
"""

# everything the page loads is ours; Swagger UI inlines styles and SVG data URLs
SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
)


def asset_names():
    """Every name ``/docs/<asset>`` serves (the OpenAPI document lists them)."""
    return sorted(ASSET_TYPES)


def page(request):
    """The HTML page (``GET /docs``)."""
    return _response(request, PAGE.encode(), "text/html; charset=utf-8", PAGE_CACHE)


def asset(request, name):
    """One of :data:`ASSETS` or the initializer; 404 for any other name."""
    if name == INITIALIZER_NAME:
        body = INITIALIZER.encode()
    elif name in ASSETS:
        body = _read(name)
    else:
        raise http.NotFound(f"no docs asset {name[:100]}")
    content_type = ASSET_TYPES[name]
    if content_type.startswith("text/"):
        content_type += "; charset=utf-8"
    return _response(request, body, content_type, ASSET_CACHE)


@cache
def _read(name):
    return (swagger_ui_path / name).read_bytes()


def _response(request, body, content_type, cache_control):
    response = Response(body, content_type=content_type)
    response.headers["Cache-Control"] = cache_control
    response.headers["X-Content-Type-Options"] = "nosniff"
    if content_type.startswith("text/html"):
        response.headers["Content-Security-Policy"] = SECURITY_POLICY
    response.set_etag(hashlib.sha256(body).hexdigest()[:32])
    return response.make_conditional(request)
