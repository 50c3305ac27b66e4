"""Twilio webhooks: status callbacks and inbound messages (skeleton)."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

ROUTES: list[ControllerRouterHandler] = []
