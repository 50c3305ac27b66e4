"""Placeholder so the app imports; the BC webhook routes follow in the next commit."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

ROUTES: list[ControllerRouterHandler] = []
