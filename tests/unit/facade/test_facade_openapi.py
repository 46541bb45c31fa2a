"""GET /openapi.json: it describes every route, status, code and limit the facade really has."""

import pytest

from facade.errors import error_codes_by_status


@pytest.fixture
def spec(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def test_spec_documents_every_route_and_method_the_app_answers(app, spec):
    served = {
        (rule.rule.replace("<", "{").replace(">", "}"), method.lower())
        for rule in app.url_map.iter_rules()
        for method in rule.methods
        if method != "OPTIONS"
    }
    documented = {(path, method) for path, operations in spec["paths"].items() for method in operations}

    assert spec["openapi"].startswith("3.0.")
    assert documented == served


def test_spec_carries_the_instance_limits(spec):
    schema = spec["paths"]["/"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    single, batch, inference = schema["oneOf"]

    assert single["properties"]["text"]["maxLength"] == 20
    assert batch["properties"]["texts"]["maxItems"] == 3
    assert inference["properties"]["inputs"]["oneOf"][1]["maxItems"] == 3
    assert "additionalProperties" not in single


@pytest.mark.parametrize(("status",), [("400",), ("413",), ("415",), ("500",), ("502",), ("503",), ("504",)])
def test_classify_documents_each_error_status_with_its_codes(spec, status):
    response = spec["paths"]["/"]["post"]["responses"][status]
    error = response["content"]["application/json"]["schema"]["properties"]["error"]

    assert error["properties"]["code"]["enum"] == error_codes_by_status()[int(status)]
    assert error["additionalProperties"] is False


def test_429_and_503_document_retry_after_and_every_response_documents_the_id_headers(spec):
    for operations in spec["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                assert {"X-Container-ID", "X-Request-ID"} <= set(response["headers"])
                assert ("Retry-After" in response["headers"]) == (status in ("429", "503"))


def test_error_table_has_a_distinct_code_for_each_failure():
    codes = [code for group in error_codes_by_status().values() for code in group]

    assert len(codes) == len(set(codes))
    assert error_codes_by_status()[400] == [
        "invalid_json",
        "missing_text",
        "conflicting_fields",
        "invalid_text_type",
        "empty_text",
        "empty_texts",
        "too_many_texts",
        "text_too_long",
        "invalid_text",
        "invalid_option",
        "bad_request",
    ]


def test_413_documents_the_token_limit_next_to_the_body_size_limit(spec):
    response = spec["paths"]["/"]["post"]["responses"]["413"]
    codes = response["content"]["application/json"]["schema"]["properties"]["error"]["properties"]["code"]["enum"]

    assert codes == ["too_many_tokens", "text_too_many_tokens", "payload_too_large"]
    assert "too_many_tokens" in response["description"]
