from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter

from lantern_runtime.listing import DEFAULT_LIMIT, Limit, OrderId

if TYPE_CHECKING:
    from notifier.notifications import NotificationSender


def notifications_router(sender: NotificationSender) -> APIRouter:
    router = APIRouter(tags=["notifications"])

    @router.get("/notifications")
    async def list_notifications(order_id: OrderId, limit: Limit = DEFAULT_LIMIT) -> list[dict[str, Any]]:
        return await sender.for_order(order_id, limit=limit)

    return router
