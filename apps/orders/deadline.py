"""The payment deadline: a pending order whose payment never settles is cancelled, so no order
stays pending forever, whatever happened to its messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta
from typing import TYPE_CHECKING

from opentelemetry.instrumentation.utils import suppress_instrumentation

if TYPE_CHECKING:
    from lantern_runtime.storage import OutboxRelay
    from orders.repository import OrderRepository

logger = logging.getLogger(__name__)


class PaymentDeadline:
    def __init__(self, repository: OrderRepository, relay: OutboxRelay, *, seconds: float) -> None:
        self._repository = repository
        self._relay = relay
        self._deadline = timedelta(seconds=seconds)
        # Checking a few times per deadline keeps an order's overrun a fraction of it.
        self._interval = max(0.5, seconds / 4)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="payment-deadline")

    async def stop(self) -> None:
        # Asked, not cancelled: a cancel inside the transaction could leave its lock held.
        if self._task is not None:
            self._stop.set()
            await self._task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)
            if self._stop.is_set():
                return
            try:
                # A check belongs to no request: traced, each would be a trace of its own.
                with suppress_instrumentation():
                    cancelled = await self._repository.cancel_overdue(self._deadline)
            except Exception as error:
                logger.warning("payment deadline check failed", extra={"error": str(error)})
                continue
            for order in cancelled:
                logger.warning("order cancelled by the payment deadline", extra={"order_id": order.id})
            if cancelled:
                self._relay.wake()
