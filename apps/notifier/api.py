from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

if TYPE_CHECKING:
    from notifier.notifications import Outbox


def notifications_router(outbox: Outbox) -> APIRouter:
    router = APIRouter(tags=["notifications"])

    @router.get("/notifications")
    async def list_notifications(
        order_id: Annotated[str | None, Query()] = None,
    ) -> list[dict[str, Any]]:
        return [notification.as_json() for notification in outbox.for_order(order_id)]

    return router
