"""The OpenAPI 3.1 document of ``/v1``, built from the same pydantic views the API returns."""

from __future__ import annotations

from functools import cache
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from promptship import __version__
from promptship.domain.promptfile import MAX_VARS_CHARS, MAX_VERSION_CHARS
from promptship.domain.template import MAX_VARIABLES, VARIABLE_RE
from promptship.services.traffic import MAX_BATCH, MAX_INPUT_CHARS, MAX_OUTPUT_CHARS
from promptship.services.views import (
    ApplyResult,
    DecisionOutcome,
    DeploymentMove,
    HistoryPage,
    PromptStatus,
    PushResult,
    RequestView,
    RollbackResult,
    RuntimePrompt,
    RunView,
    VersionDetail,
    VersionDiff,
    VersionSummary,
)

PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
}
NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
REQUEST_ID = {
    "name": "id",
    "in": "path",
    "required": True,
    "description": "req-42 or 42",
    "schema": {"type": "string"},
}
#: an admin token names the person it acts for; any other token may name only itself
ON_BEHALF = {
    "name": "X-Promptship-User",
    "in": "header",
    "required": False,
    "schema": {"type": "string"},
}
WHOAMI = {
    "type": "object",
    "required": ["subject", "service", "scope", "permissions", "token"],
    "properties": {
        "subject": {"type": "string"},
        "service": {"type": "boolean"},
        "scope": {"type": "string"},
        "permissions": {"type": "array", "items": {"type": "string"}},
        "token": {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    },
}


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def _json_body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def _strings(required: list[str], *optional: str, **formats: str) -> dict[str, Any]:
    """An object of text fields (``formats`` gives a field's string format)."""
    properties = {
        key: {"type": "string", **({"format": formats[key]} if key in formats else {})}
        for key in [*required, *optional]
    }
    return {"type": "object", "required": required, "properties": properties}


def _run_body(body: dict[str, Any]) -> dict[str, Any]:
    """An override's body: ``run_id`` names the test run the caller weighed."""
    body["properties"]["run_id"] = {"type": "integer", "minimum": 1}
    return body


def _override_body() -> dict[str, Any]:
    return _run_body(_strings(["reason"], "content_hash"))


def _traffic_sample() -> dict[str, Any]:
    sample = _strings(["prompt", "environment", "input"], "output", "version", "at", at="date-time")
    sample["properties"]["input"]["maxLength"] = MAX_INPUT_CHARS
    sample["properties"]["output"]["maxLength"] = MAX_OUTPUT_CHARS
    sample["properties"]["version"]["maxLength"] = MAX_VERSION_CHARS
    sample["properties"]["vars"] = {
        "type": "object",
        "description": "the template vars the app rendered the prompt with (variable name to "
        f"any JSON value; at most {MAX_VARS_CHARS:,} characters as JSON); a soak renders both "
        "versions with them",
        "maxProperties": MAX_VARIABLES,
        "propertyNames": {"pattern": f"^{VARIABLE_RE.pattern}$"},
    }
    return sample


def _ok(schema: dict[str, Any], status: str = "200", **extra: Any) -> dict[str, Any]:
    return {
        status: {"description": "OK", "content": {"application/json": {"schema": schema}}, **extra},
        "default": {
            "description": "A problem",
            "content": {
                "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
            },
        },
    }


@cache
def document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        PromptStatus,
        VersionSummary,
        VersionDetail,
        HistoryPage,
        VersionDiff,
        RuntimePrompt,
        PushResult,
        RequestView,
        DecisionOutcome,
        RunView,
        RollbackResult,
        DeploymentMove,
        ApplyResult,
    ]
    _, schemas = models_json_schema(
        [(m, "serialization") for m in models], ref_template="#/components/schemas/{model}"
    )
    components = {**schemas.get("$defs", {}), "Problem": PROBLEM}
    bearer: list[dict[str, list[str]]] = [{"bearer": []}]
    paths: dict[str, Any] = {
        "/v1/prompts": {
            "get": {
                "summary": "Every prompt with its version per environment",
                "security": bearer,
                "responses": _ok({"type": "array", "items": _ref(PromptStatus)}),
            },
            "post": {
                "summary": "Push a version (the prompt file as YAML, or JSON)",
                "security": bearer,
                "parameters": [
                    {
                        "name": "author",
                        "in": "query",
                        "required": False,
                        "description": "the author, when not the token's own identity (admin)",
                        "schema": {"type": "string"},
                    },
                    ON_BEHALF,
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/yaml": {"schema": {"type": "string"}},
                        "application/json": {"schema": {"type": "object"}},
                    },
                },
                "responses": {
                    **_ok(_ref(PushResult), "201"),
                    "200": {
                        "description": "Already registered with this content",
                        "content": {"application/json": {"schema": _ref(PushResult)}},
                    },
                },
            },
        },
        "/v1/deployments": {
            "get": {
                "summary": "The per-environment deployment file (what runs where, who, when)",
                "security": bearer,
                "responses": _ok(
                    {
                        "type": "object",
                        "additionalProperties": {
                            "type": "object",
                            "additionalProperties": {"type": "object"},
                        },
                    }
                ),
            }
        },
        "/v1/deployments/apply": {
            "post": {
                "summary": "Apply a deployment file as the desired state: dev moves at once, "
                "staging promotes through its tests, production opens a request, an earlier "
                "version rolls back (a decision: deciding tokens of on-call or approvers only)",
                "security": bearer,
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "required": False,
                        "description": "1: plan only, change nothing",
                        "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                    },
                    ON_BEHALF,
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/yaml": {"schema": {"type": "string"}}},
                },
                "responses": _ok(_ref(ApplyResult)),
            }
        },
        "/v1/prompts/{name}": {
            "get": {
                "summary": "A prompt's status",
                "parameters": [NAME],
                "security": bearer,
                "responses": _ok(_ref(PromptStatus)),
            }
        },
        "/v1/prompts/{name}/versions": {
            "get": {
                "summary": "A prompt's versions",
                "parameters": [NAME],
                "security": bearer,
                "responses": _ok({"type": "array", "items": _ref(VersionSummary)}),
            }
        },
        "/v1/prompts/{name}/versions/{version}": {
            "get": {
                "summary": "One version",
                "parameters": [
                    NAME,
                    {
                        "name": "version",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
                "security": bearer,
                "responses": _ok(_ref(VersionDetail)),
            }
        },
        "/v1/prompts/{name}/history": {
            "get": {
                "summary": "A prompt's audit trail, newest first",
                "parameters": [
                    NAME,
                    {"name": "environment", "in": "query", "schema": {"type": "string"}},
                    {"name": "before", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 0}},
                ],
                "security": bearer,
                "responses": _ok(_ref(HistoryPage)),
            }
        },
        "/v1/prompts/{name}/diff": {
            "get": {
                "summary": "Unified diff of two versions' texts and settings",
                "parameters": [
                    NAME,
                    {"name": "from", "in": "query", "required": True, "schema": {"type": "string"}},
                    {"name": "to", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
                "security": bearer,
                "responses": _ok(_ref(VersionDiff)),
            }
        },
        "/v1/prompts/{name}/environments/{environment}": {
            "get": {
                "summary": "The active prompt of an environment: its system prompt and "
                "messages as written (templates), its variables and settings (ETag; long-poll "
                "with wait)",
                "parameters": [
                    NAME,
                    {
                        "name": "environment",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "wait",
                        "in": "query",
                        "schema": {"type": "number", "minimum": 0, "maximum": 60},
                    },
                    {"name": "If-None-Match", "in": "header", "schema": {"type": "string"}},
                ],
                "security": bearer,
                "responses": {
                    **_ok(_ref(RuntimePrompt)),
                    "304": {"description": "Not modified (the ETag still matches)"},
                },
            }
        },
        "/v1/prompts/{name}/promotions": {
            "post": {
                "summary": "Request a promotion (people approve it, in Slack or with their "
                "token); dev has no gates and moves at once (200)",
                "parameters": [NAME, ON_BEHALF],
                "security": bearer,
                "requestBody": _json_body(
                    _strings(["version", "environment"], "requester", "reason")
                ),
                "responses": {
                    **_ok(_ref(RequestView), "201"),
                    "200": {
                        "description": "dev pointed at the version at once",
                        "content": {"application/json": {"schema": _ref(DeploymentMove)}},
                    },
                },
            }
        },
        "/v1/traffic": {
            "post": {
                "summary": "Ingest up to 1,000 real queries for soaks",
                "security": bearer,
                "requestBody": _json_body(
                    {
                        "type": "array",
                        "maxItems": MAX_BATCH,
                        "items": _traffic_sample(),
                    }
                ),
                "responses": _ok(
                    {
                        "type": "object",
                        "properties": {
                            "stored": {"type": "integer"},
                            "pruned": {"type": "integer"},
                        },
                    },
                    "201",
                ),
            }
        },
    }
    paths.update(_decision_paths(bearer))
    return {
        "openapi": "3.1.0",
        "info": {"title": "promptship", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _decision_paths(bearer: list[dict[str, list[str]]]) -> dict[str, Any]:
    def post(summary: str, parameters: list[Any], body: dict[str, Any] | None, answer: Any) -> Any:
        operation: dict[str, Any] = {
            "summary": summary,
            "parameters": [*parameters, ON_BEHALF],
            "security": bearer,
            "responses": answer,
        }
        if body is not None:
            operation["requestBody"] = body
        return {"post": operation}

    optional = False
    return {
        "/v1/whoami": {
            "get": {
                "summary": "The token's identity, scope and permissions",
                "security": bearer,
                "responses": _ok(WHOAMI),
            }
        },
        "/v1/requests/{id}": {
            "get": {
                "summary": "A promotion request with its checks and decisions",
                "parameters": [REQUEST_ID],
                "security": bearer,
                "responses": _ok(_ref(RequestView)),
            }
        },
        "/v1/requests/{id}/approve": post(
            "Approve (a person's approve token; never your own request or version)",
            [REQUEST_ID],
            _json_body(_strings([], "comment", "content_hash"), optional),
            _ok(_ref(DecisionOutcome)),
        ),
        "/v1/requests/{id}/reject": post(
            "Reject, with a reason; this closes the request",
            [REQUEST_ID],
            _json_body(_strings(["reason"], "content_hash")),
            _ok(_ref(DecisionOutcome)),
        ),
        "/v1/requests/{id}/cancel": post(
            "Cancel an open request (its requester or an approver)",
            [REQUEST_ID],
            None,
            _ok(_ref(RequestView)),
        ),
        "/v1/requests/{id}/override": post(
            "Accept the regressions of the test run you weighed (run_id: the request's "
            "evidence.tests.run_id; required once the tests ran more than once) holding an "
            "open request back, with a reason (approvers); 409 when a later run replaced it",
            [REQUEST_ID],
            _json_body(_override_body()),
            _ok(_ref(RequestView)),
        ),
        "/v1/requests/{id}/rerun": post(
            "Run an open request's tests again (its requester or an approver); it waits",
            [REQUEST_ID],
            _json_body(_strings([], "content_hash"), optional),
            _ok(_ref(RequestView)),
        ),
        "/v1/prompts/{name}/breakglass": post(
            "Emergency promotion to production: passing tests, a reason, more approvals",
            [NAME],
            _json_body(_strings(["version", "reason"], "requester")),
            _ok(_ref(RequestView), "201"),
        ),
        "/v1/prompts/{name}/versions/{version}/override": post(
            "Accept the regressions of the version's test run you weighed (run_id: its "
            "latest run's id; required once the version's tests finished more than once), "
            "with a reason (approvers); 409 when a later run replaced it",
            [NAME, VERSION],
            _json_body(_run_body(_strings(["reason"]))),
            _ok(_ref(RunView)),
        ),
        "/v1/prompts/{name}/environments/{environment}/rollback": post(
            "Point an environment back at an earlier version (default: the previous one)",
            [
                NAME,
                {
                    "name": "environment",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string"},
                },
            ],
            _json_body(_strings([], "version", "reason"), optional),
            _ok(_ref(RollbackResult)),
        ),
    }
