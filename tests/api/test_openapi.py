"""The OpenAPI document says what the server does: request bodies, the errors of each operation in one
schema, and how to authenticate."""

from __future__ import annotations

import httpx


def test_the_document_describes_bodies_errors_and_security(server_without_worker):
    document = httpx.get(server_without_worker["base"] + "/openapi.json").json()
    assert set(document["components"]["securitySchemes"]) == {"bearerKey", "sessionCookie"}
    assert document["components"]["securitySchemes"]["bearerKey"]["scheme"] == "bearer"
    operations = [(path, method, op) for path, item in document["paths"].items() for method, op in item.items()]
    assert len(operations) >= 44
    for path, method, op in operations:
        assert "422" not in op["responses"], (method, path)  # a bad request is a 400, as OpenAI answers
        for code, response in op["responses"].items():
            if code.startswith(("4", "5")):
                schema = response["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, code)
        if path in ("/health", "/ready"):
            assert "security" not in op
            continue
        assert {"400", "401", "403"} <= set(op["responses"]), (method, path)
        assert op["security"] == [{"bearerKey": []}, {"sessionCookie": []}], (method, path)
    bodies = {path for path, method, op in operations if method == "post" and "requestBody" in op}
    assert {"/v1/fine_tuning/jobs", "/v1/chat/completions", "/v1/files", "/api/projects",
            "/api/projects/upload", "/api/users"} <= bodies
    job = document["components"]["schemas"]["JobCreate"]
    assert job["required"] == ["model", "training_file"] and job["additionalProperties"] is False
    assert document["components"]["schemas"]["ErrorBody"]["required"] == ["error"]
