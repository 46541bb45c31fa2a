"""The HTML page and its form, health and readiness, and the headers on every response."""

import re

import pytest

from facade.errors import UpstreamUnavailableError


def test_page_shows_the_container_id_and_an_accessible_form(client):
    response = client.get("/")
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "test-box" in html
    assert '<html lang="en">' in html
    assert '<meta name="viewport"' in html
    assert '<label for="text">' in html
    assert '<textarea id="text" name="text"' in html
    assert '<form id="classify-form" method="post" action="/">' in html
    assert 'aria-live="polite"' in html
    assert not is_shown(html, "result")
    assert not is_shown(html, "error")


def is_shown(html, section_id):
    """Return whether the page's section with this id is rendered visible (not hidden)."""
    tag = re.search(rf'<section id="{section_id}"[^>]*>', html)
    assert tag, f"no section {section_id}"
    return not re.search(r"\shidden[\s>]", tag.group(0))


def test_page_loads_nothing_from_elsewhere(client):
    response = client.get("/")
    html = response.get_data(as_text=True)

    assert not re.search(r"""(src=|<link|url\(|@import|https?://)""", html)
    assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_page_runs_only_its_own_inline_script_under_a_fresh_nonce(client):
    first, second = client.get("/"), client.get("/")
    csp = first.headers["Content-Security-Policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]{20,})'", csp).group(1)
    scripts = re.findall(r"<script[^>]*>", first.get_data(as_text=True))

    assert scripts == [f'<script nonce="{nonce}">']
    assert "connect-src 'self'" in csp
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "frame-ancestors 'none'" in csp
    assert "form-action 'self'" in csp
    assert nonce not in second.headers["Content-Security-Policy"]
    assert first.headers["Cache-Control"] == "no-store"


def test_page_script_posts_json_to_the_form_action_and_renders_with_text_content(client):
    html = client.get("/").get_data(as_text=True)
    script = html.split("<script", 1)[1]

    assert "fetch(form.action" in script
    assert '"Content-Type": "application/json"' in script
    assert "JSON.stringify({ text })" in script
    assert "innerHTML" not in script
    assert "body.error.message" in script


def test_form_post_shows_label_score_and_container_id(client, predictor):
    response = client.post("/", data={"text": "a good film"})
    html = response.get_data(as_text=True)

    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert "POSITIVE" in html
    assert "0.9998" in html
    assert 'Classified by container <code id="result-container">test-box</code>' in html
    assert is_shown(html, "result")
    assert not is_shown(html, "error")
    assert "a good film</textarea>" in html
    assert predictor.calls[0][0] == ["a good film"]


def test_form_post_mentions_truncation(client, predictor):
    predictor.truncated_indexes = {0}

    assert "only its start was classified" in client.post("/", data={"text": "good"}).get_data(as_text=True)


def test_form_text_is_escaped_not_rendered(client):
    html = client.post("/", data={"text": "<script>x</script>"}).get_data(as_text=True)

    assert "<script>x" not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"text": ""}, 400, "empty"),
        ({"text": "   "}, 400, "empty"),
        ({"text": "x" * 21}, 400, "limit of 20"),
        ({"other": "good"}, 400, "Type a sentence"),
        ({"text": "x" * 3000}, 413, "too long to send"),
    ],
)
def test_invalid_form_post_rerenders_the_page_with_the_error(client, predictor, form, status, words):
    response = client.post("/", data=form)
    html = response.get_data(as_text=True)

    assert response.status_code == status
    assert response.mimetype == "text/html"
    assert 'role="alert"' in html
    assert is_shown(html, "error")
    assert not is_shown(html, "result")
    assert words in html
    assert predictor.calls == []


def test_form_post_with_torchserve_down_shows_503_page_with_retry_after(client, predictor):
    predictor.error = UpstreamUnavailableError("The sentiment model is not available right now.")

    response = client.post("/", data={"text": "good"})

    assert response.status_code == 503
    assert response.mimetype == "text/html"
    assert response.headers["Retry-After"] == "7"
    assert "not available right now" in response.get_data(as_text=True)


def test_healthz_is_ok_without_asking_torchserve(client, predictor):
    predictor.ready = False

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "container_id": "test-box"}


def test_readyz_is_200_when_torchserve_has_a_ready_worker(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ready", "container_id": "test-box"}


def test_readyz_is_503_with_retry_after_when_torchserve_is_not_ready(client, predictor):
    predictor.ready = False

    response = client.get("/readyz")

    assert response.status_code == 503
    assert response.headers["Retry-After"] == "7"
    assert response.get_json()["error"]["code"] == "backend_unavailable"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("PUT", "/", "GET, HEAD, OPTIONS, POST"),
        ("DELETE", "/", "GET, HEAD, OPTIONS, POST"),
        ("POST", "/healthz", "GET, HEAD, OPTIONS"),
        ("PATCH", "/readyz", "GET, HEAD, OPTIONS"),
        ("POST", "/openapi.json", "GET, HEAD, OPTIONS"),
    ],
)
def test_wrong_method_is_rejected_405_with_allow_header(client, method, path, allow):
    response = client.open(path, method=method)

    assert response.status_code == 405
    assert response.headers["Allow"] == allow
    assert response.get_json()["error"]["code"] == "method_not_allowed"
    assert response.get_json()["container_id"] == "test-box"


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("POST", "/predictions/sentiment"), ("GET", "/healthz/"), ("GET", "/a//healthz")],
)
def test_unknown_path_is_rejected_404_as_json(client, method, path):
    response = client.open(path, method=method)

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "kwargs"),
    [
        ("GET", "/", {}),
        ("HEAD", "/", {}),
        ("POST", "/", {"json": {"text": "good"}}),
        ("POST", "/", {"data": {"text": "good"}}),
        ("POST", "/", {"data": "x", "content_type": "text/plain"}),
        ("GET", "/healthz", {}),
        ("GET", "/readyz", {}),
        ("GET", "/openapi.json", {}),
        ("GET", "/nope", {}),
        ("PUT", "/", {}),
    ],
)
def test_every_response_names_its_container_and_request(client, method, path, kwargs):
    response = client.open(path, method=method, **kwargs)

    assert response.headers["X-Container-ID"] == "test-box"
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


def test_valid_request_id_is_echoed_and_forwarded_to_torchserve(client, predictor):
    response = client.post("/", json={"text": "good"}, headers={"X-Request-ID": "trace-42.a:b_c"})

    assert response.headers["X-Request-ID"] == "trace-42.a:b_c"
    assert predictor.calls[0][1] == "trace-42.a:b_c"


@pytest.mark.parametrize(("sent",), [("has space",), ("x" * 129,), ("",), ("semi;colon",), ("new\u00e9",)])
def test_unsafe_request_id_is_replaced_by_a_new_one(client, predictor, sent):
    response = client.post("/", json={"text": "good"}, headers={"X-Request-ID": sent})

    generated = response.headers["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    assert predictor.calls[0][1] == generated


def test_error_responses_echo_the_request_id_too(client):
    response = client.get("/nope", headers={"X-Request-ID": "abc"})

    assert response.headers["X-Request-ID"] == "abc"


def test_docs_page_loads_swagger_ui_from_this_origin_only_under_a_strict_policy(client):
    response = client.get("/docs")
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert '<script src="docs/swagger-ui-bundle.js"></script>' in html
    assert "<script>" not in html and "http" not in html.replace("http-equiv", "")
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "unsafe-eval" not in policy and "default-src 'none'" in policy
    assert "frame-ancestors 'none'" in policy


def test_docs_assets_come_from_the_bundle_and_point_at_this_document(client):
    with client.get("/docs/swagger-ui-bundle.js") as script:
        assert script.status_code == 200 and b"SwaggerUIBundle" in script.data
    with client.get("/docs/swagger-ui.css") as style:
        assert style.mimetype == "text/css"
    init = client.get("/docs/init.js")
    assert init.mimetype == "text/javascript" and b'url: "openapi.json"' in init.data


@pytest.mark.parametrize("name", ["index.html", "..%2Fsettings.py", "swagger-ui-bundle.js.map", "oauth2-redirect.html"])
def test_anything_else_under_docs_is_the_json_404(client, name):
    response = client.get(f"/docs/{name}")
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
