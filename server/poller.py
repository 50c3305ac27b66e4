"""Placeholder so the app and runtime import; the real worker follows in the next commit."""

from __future__ import annotations

from server.services import Services


class Poller:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run_once(self) -> int:
        return 0
