"""The public API as clients see it: answers, problems, and the OpenAPI document that says so.

The gateway does not validate order bodies itself (orders does, and its 422 is relayed); the
body schema comes from orders' own command model, so the document cannot drift from it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field
from pydantic.json_schema import GenerateJsonSchema

from orders.domain import OrderStatus, PlaceOrder

REF = "#/components/schemas/{model}"


class PublicJsonSchema(GenerateJsonSchema):
    """Says what a decimal string must look like, which pydantic leaves open."""

    def decimal_schema(self, schema: Any) -> dict[str, Any]:
        json_schema = super().decimal_schema(schema)
        places, digits = schema.get("decimal_places"), schema.get("max_digits")
        if places is not None and digits is not None:
            pattern = rf"^\d{{1,{digits - places}}}(\.\d{{1,{places}}})?$"
            for branch in json_schema.get("anyOf", []):
                if branch.get("type") == "string":
                    branch.setdefault("pattern", pattern)
                elif branch.get("type") == "number":
                    branch.setdefault("exclusiveMaximum", 10 ** (digits - places))
        return json_schema


class OrderAccepted(BaseModel):
    order_id: str
    status: OrderStatus


class OrderLineView(BaseModel):
    sku: str
    quantity: int
    unit_price: str


class OrderView(BaseModel):
    order_id: str
    customer_id: str
    status: OrderStatus
    total: str = Field(description="decimal, as a string")
    items: list[OrderLineView]
    status_reason: str | None
    created_at: datetime
    updated_at: datetime


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, sent as application/problem+json."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    trace_id: str | None = Field(default=None, description="the trace of the failed request")
    errors: list[FieldError] | None = Field(default=None, description="on 422: each invalid field")


def problem(description: str) -> dict[str, Any]:
    return {"model": ProblemDetails, "description": description}


UNAUTHENTICATED: dict[int | str, dict[str, Any]] = {
    401: problem("no valid bearer token; see WWW-Authenticate"),
    403: problem("the token lacks a required scope"),
    429: problem("too many requests from this client; see Retry-After and RateLimit-*"),
}
UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: problem("the service behind is unavailable; see Retry-After"),
    504: problem("no answer in time"),
}
PLACE_ORDER_EXTRA = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PlaceOrder"}}},
    },
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": True,
            "description": "Unique per order; a retry with the same key returns the same order.",
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
        }
    ],
}


def finish_openapi(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the order body's schemas, and give error answers their problem+json media type."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    body = PlaceOrder.model_json_schema(ref_template=REF, schema_generator=PublicJsonSchema)
    components.update(body.pop("$defs", {}))
    components["PlaceOrder"] = body
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {})
                if status[0] in "45" and "application/json" in content:
                    content["application/problem+json"] = content.pop("application/json")
    return schema
