from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Query

if TYPE_CHECKING:
    from notifier.notifications import NotificationSender


def notifications_router(sender: NotificationSender) -> APIRouter:
    router = APIRouter(tags=["notifications"])

    @router.get("/notifications")
    async def list_notifications(
        order_id: Annotated[str | None, Query()] = None,
    ) -> list[dict[str, Any]]:
        return await sender.for_order(order_id)

    return router
