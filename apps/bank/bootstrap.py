"""Wires bank: the ledger and its HTTP API."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bank.api import bank_router
from bank.ledger import Ledger, RequestLog
from bank.settings import BankSettings
from lantern_runtime.app import service_app
from lantern_runtime.health import Readiness
from lantern_runtime.service import serve

if TYPE_CHECKING:
    from fastapi import FastAPI

    from lantern_runtime.telemetry import Telemetry

SERVICE_NAME = "bank"


def create_app(settings: BankSettings, telemetry: Telemetry) -> tuple[FastAPI, Readiness]:
    readiness = Readiness({})
    ledger = Ledger(settings.bank_approval_limit, max_records=settings.bank_ledger_size)
    app = service_app(
        SERVICE_NAME,
        subject_secret=settings.gateway_subject_secret,
        readiness=readiness,
        telemetry=telemetry,
        routers=[bank_router(ledger, settings, RequestLog(settings.bank_ledger_size))],
        description="Simulates a payment provider, with injectable latency and failures.",
    )
    return app, readiness


def main() -> None:
    serve(SERVICE_NAME, BankSettings, create_app)
