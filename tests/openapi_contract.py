"""A small validator built from Twilio's OpenAPI subsets (read in place from ../shared/reference).

Requests: the path matches a templated path, the method exists, every form/query parameter is
declared, required ones are present, x-twilio `conditional` one-of groups are satisfied, and values
fit declared enums/patterns. Responses: JSON validated with jsonschema against the response schema
(OpenAPI 3.0 `nullable` rewritten into JSON Schema type lists).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema

SPEC_FILES = ("twilio_api_v2010.subset.json", "twilio_verify_v2.subset.json")


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _nullable_to_jsonschema(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: _nullable_to_jsonschema(v) for k, v in node.items() if k != "nullable"}
        if node.get("nullable"):
            if "type" in out:
                out["type"] = (
                    [out["type"], "null"] if isinstance(out["type"], str) else [*out["type"], "null"]
                )
            elif "$ref" in out:
                out = {"anyOf": [{"$ref": out.pop("$ref")}, {"type": "null"}], **out}
            if "enum" in out:
                out["enum"] = [*out["enum"], None]
        return out
    if isinstance(node, list):
        return [_nullable_to_jsonschema(v) for v in node]
    return node


@dataclass
class Operation:
    method: str
    template: str
    regex: re.Pattern[str]
    spec: dict[str, Any]
    doc: dict[str, Any]

    @property
    def operation_id(self) -> str:
        return str(self.spec["operationId"])


class TwilioContract:
    def __init__(self, openapi_dir: Path) -> None:
        self.operations: list[Operation] = []
        for name in SPEC_FILES:
            doc = json.loads((openapi_dir / name).read_text())
            doc["components"] = _nullable_to_jsonschema(doc["components"])
            for template, methods in doc["paths"].items():
                pattern = "^" + re.sub(r"\\\{[A-Za-z]+\\\}", "[^/]+", re.escape(template)) + "$"
                for method, spec in methods.items():
                    if method in ("get", "post", "delete", "put"):
                        self.operations.append(
                            Operation(method.upper(), template, re.compile(pattern), spec, doc)
                        )

    def find(self, method: str, path: str) -> Operation:
        candidates = [op for op in self.operations if op.regex.match(path)]
        if not candidates:
            raise AssertionError(f"{method} {path}: no such path in the OpenAPI subset")
        for op in candidates:
            if op.method == method:
                return op
        raise AssertionError(
            f"{method} {path}: method not declared (declared: {[c.method for c in candidates]})"
        )

    def _resolve(self, doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = doc["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        return schema

    def _check_value(self, where: str, doc: dict[str, Any], schema: dict[str, Any], value: str) -> list[str]:
        schema = self._resolve(doc, schema)
        if schema.get("type") == "array":
            return self._check_value(where, doc, schema.get("items", {}), value)
        problems = []
        if "enum" in schema and value not in schema["enum"]:
            problems.append(f"{where}={value!r} not in enum {schema['enum']}")
        if "pattern" in schema and not re.match(schema["pattern"], value):
            problems.append(f"{where}={value!r} does not match {schema['pattern']}")
        if schema.get("type") == "integer" and not re.fullmatch(r"-?\d+", value):
            problems.append(f"{where}={value!r} is not an integer")
        if schema.get("type") == "boolean" and value.lower() not in ("true", "false"):
            problems.append(f"{where}={value!r} is not a boolean")
        return problems

    def request_problems(
        self,
        method: str,
        path: str,
        *,
        query: list[tuple[str, str]],
        form: list[tuple[str, str]],
        content_type: str,
    ) -> list[str]:
        op = self.find(method, path)
        problems: list[str] = []
        declared = {p["name"]: p for p in op.spec.get("parameters", []) if p["in"] == "query"}
        for name, value in query:
            if name not in declared:
                problems.append(f"query parameter {name!r} not declared for {op.operation_id}")
            else:
                problems += self._check_value(name, op.doc, declared[name]["schema"], value)
        body = op.spec.get("requestBody")
        if body is None:
            if form:
                problems.append(f"{op.operation_id} takes no request body, got {form}")
            return problems
        if content_type.split(";")[0].strip() != "application/x-www-form-urlencoded":
            problems.append(f"{op.operation_id}: body must be form-encoded, got {content_type!r}")
        schema = body["content"]["application/x-www-form-urlencoded"]["schema"]
        props = schema.get("properties", {})
        names = {n for n, _ in form}
        for name, value in form:
            if name not in props:
                problems.append(f"form field {name!r} not declared for {op.operation_id}")
            else:
                problems += self._check_value(name, op.doc, props[name], value)
        for required in schema.get("required", []):
            if required not in names:
                problems.append(f"{op.operation_id}: required form field {required!r} missing")
        snake_names = {_snake(n) for n in names}
        for group in op.spec.get("x-twilio", {}).get("conditional", []):
            if not snake_names & set(group):
                problems.append(f"{op.operation_id}: one of {group} is required")
        return problems

    def response_problems(self, method: str, path: str, status: int, body: Any) -> list[str]:
        op = self.find(method, path)
        response = op.spec["responses"].get(str(status))
        if response is None:
            return [f"{op.operation_id}: status {status} not declared ({list(op.spec['responses'])})"]
        content = response.get("content", {}).get("application/json")
        if content is None:
            return [] if body in (None, "") else [f"{op.operation_id}: {status} declares no body"]
        schema = dict(_nullable_to_jsonschema(content["schema"]))
        schema["components"] = op.doc["components"]
        validator = jsonschema.Draft7Validator(schema)
        return [
            f"{op.operation_id} {status}: {e.json_path}: {e.message}" for e in validator.iter_errors(body)
        ]
