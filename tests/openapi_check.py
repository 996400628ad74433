"""Checks API answers against the OpenAPI document the server itself serves."""
from __future__ import annotations

import re
from typing import Any

from jsonschema import Draft202012Validator
from referencing import Registry, Resource


class OpenApiChecker:
    def __init__(self, document: dict[str, Any]) -> None:
        assert document["openapi"].startswith("3.1")
        self.document = document
        self.registry: Registry = Registry().with_resource(
            "urn:test:api", Resource.from_contents({"$schema": "https://json-schema.org/draft/2020-12/schema", **document})
        )
        self.paths = [(re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", p) + "$"), p) for p in document["paths"]]
        self.checked = 0

    def check(self, method: str, path: str, status: int, body: Any) -> None:
        path = path.split("?", 1)[0]
        template = next((t for rx, t in self.paths if rx.match(path)), None)
        assert template is not None, f"{path} is not in the OpenAPI document"
        operation = self.document["paths"][template].get(method.lower())
        assert operation is not None, f"{method} {template} is not in the OpenAPI document"
        response = operation["responses"].get(str(status))
        assert response is not None, f"{method} {template} answered {status}, which the document doesn't list"
        content = response.get("content", {}).get("application/json")
        if content is None:
            assert body is None, f"{method} {template} {status} should have no body"
            return
        pointer = "urn:test:api#/paths/" + template.replace("~", "~0").replace("/", "~1") + \
            f"/{method.lower()}/responses/{status}/content/application~1json/schema"
        Draft202012Validator({"$ref": pointer}, registry=self.registry).validate(body)
        self.checked += 1
