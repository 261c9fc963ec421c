"""Each messaging service's FastStream application and its AsyncAPI document.

The application wraps the service's broker for FastStream's tooling: `faststream docs gen
<service>.bootstrap:asyncapi --factory` writes the document from it, and in development the
service serves it (`asyncapi_router`). The service itself runs under uvicorn, its broker started
by its lifespan (lantern_runtime.lifecycle), not by `FastStream.run`.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

from faststream import FastStream
from faststream.specification import AsyncAPI, get_asyncapi_html

if TYPE_CHECKING:
    from fastapi import APIRouter
    from faststream.rabbit import RabbitBroker
    from faststream.specification import Specification

__all__ = ["asyncapi_router", "messaging_app"]


def messaging_app(broker: RabbitBroker, *, title: str, description: str) -> FastStream:
    """The FastStream application of a service's broker, with its AsyncAPI document's header."""
    return FastStream(
        broker,
        specification=AsyncAPI(title=title, description=description, version=_lantern_version()),
    )


def _lantern_version() -> str:
    try:
        return version("lantern")
    except PackageNotFoundError:  # apps/ on the path without the project installed
        return "0.0.0"


def asyncapi_router(app: FastStream) -> APIRouter:
    """GET /asyncapi (the document rendered by AsyncAPI's web component) and /asyncapi.json."""
    from fastapi import APIRouter
    from fastapi.responses import HTMLResponse

    router = APIRouter(tags=["messaging"])

    @cache
    def document() -> Specification:
        # Built on the first request, once every subscriber and publisher is declared.
        return app.schema.to_specification()

    @router.get("/asyncapi.json", summary="The service's AsyncAPI document")
    async def asyncapi_json() -> dict[str, Any]:
        jsonable: dict[str, Any] = document().to_jsonable()
        return jsonable

    @router.get("/asyncapi", response_class=HTMLResponse, summary="The AsyncAPI document, rendered")
    async def asyncapi_html() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(document()))

    return router
