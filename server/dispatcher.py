"""The dispatcher: claims due outbox jobs and sends them through Twilio (minimal skeleton)."""

from __future__ import annotations

from server.services import Services


class Dispatcher:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def run_once(self) -> int:
        return 0
