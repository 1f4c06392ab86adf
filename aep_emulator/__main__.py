"""``python -m aep_emulator``: serve the AEP REST APIs and the Query Service PostgreSQL endpoint."""

from __future__ import annotations

import logging

import uvicorn

from aep_emulator.app import create_app
from aep_emulator.config import get_settings


def main() -> None:
    settings = get_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")


if __name__ == "__main__":
    main()
