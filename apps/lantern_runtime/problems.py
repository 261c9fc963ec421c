"""One error model for every service: RFC 9457 problem details, `application/problem+json`.

Each body has `type`, `title`, `status`, `detail`, `instance` (the request path) and
`trace_id` (the trace of the request that failed, when one is recorded), plus extensions such
as `errors` (each invalid field's `loc` and `msg`) on a 422.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from opentelemetry import trace
from starlette.exceptions import HTTPException

if TYPE_CHECKING:
    from collections.abc import Mapping

    from fastapi import FastAPI, Request
    from starlette.responses import Response

__all__ = ["PROBLEM_JSON", "Problem", "install_problem_handlers", "problem_response"]

PROBLEM_JSON = "application/problem+json"
# RFC 9457: "about:blank" means the problem is just what the HTTP status says.
BLANK = "about:blank"

logger = logging.getLogger(__name__)


class Problem(Exception):
    """Raise to answer with a problem; `type` is a URI naming the kind of problem."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        title: str | None = None,
        type: str = BLANK,  # the RFC 9457 member's name
        headers: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.title = title
        self.type = type
        self.headers = dict(headers or {})
        self.extensions = dict(extensions or {})


def current_trace_id() -> str | None:
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def problem_response(
    status: int,
    detail: str,
    *,
    instance: str | None = None,
    title: str | None = None,
    type: str = BLANK,  # the RFC 9457 member's name
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": type,
        "title": title or _phrase(status),
        "status": status,
        "detail": detail,
    }
    if instance is not None:
        body["instance"] = instance
    trace_id = current_trace_id()
    if trace_id is not None:
        body["trace_id"] = trace_id
    body.update(extensions or {})
    return JSONResponse(body, status_code=status, headers=dict(headers or {}), media_type=PROBLEM_JSON)


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


async def _on_problem(request: Request, problem: Exception) -> Response:
    assert isinstance(problem, Problem)
    return problem_response(
        problem.status,
        problem.detail,
        instance=request.url.path,
        title=problem.title,
        type=problem.type,
        headers=problem.headers,
        extensions=problem.extensions,
    )


async def _on_http_exception(request: Request, error: Exception) -> Response:
    assert isinstance(error, HTTPException)
    detail = error.detail if isinstance(error.detail, str) else _phrase(error.status_code)
    extensions: dict[str, Any] = {} if isinstance(error.detail, str) else {"errors": error.detail}
    return problem_response(
        error.status_code,
        detail,
        instance=request.url.path,
        headers=error.headers,
        extensions=extensions,
    )


async def _on_validation_error(request: Request, error: Exception) -> Response:
    assert isinstance(error, RequestValidationError)
    # The offending input is left out: it can be large, and it can hold what a client should
    # not see echoed (a token pasted into the wrong field).
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", ""))} for e in error.errors()]
    fields = ", ".join(".".join(map(str, e["loc"])) for e in errors)
    return problem_response(
        422,
        f"the request is not valid: {fields}",
        instance=request.url.path,
        title="Request validation failed",
        extensions={"errors": errors},
    )


async def _on_unhandled(request: Request, error: Exception) -> Response:
    logger.error("unhandled error", exc_info=error, extra={"path": request.url.path})
    return problem_response(500, "an unexpected error occurred", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Every error the app answers with becomes a problem+json body."""
    app.add_exception_handler(Problem, _on_problem)
    app.add_exception_handler(HTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    # Starlette runs this one in its outermost error middleware, then re-raises for the server.
    app.add_exception_handler(Exception, _on_unhandled)
