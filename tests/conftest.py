"""Shared fixtures. Integration tests need the local stack (PostgreSQL + S3): ``bin/stack up``."""

from __future__ import annotations

import pytest

from tests.support.emulator import AEPClient, RunningEmulator, session_settings


@pytest.fixture(scope="session")
def emulator_session():
    """The emulator on a free port for the whole test session, with a sandbox of its own."""
    settings, sandbox = session_settings()
    running = RunningEmulator(settings).start()
    running.sandbox = sandbox
    yield running
    running.stop()


@pytest.fixture
def emulator(emulator_session):
    """The running emulator, with fault injection cleared after each test."""
    yield emulator_session
    emulator_session.emu.faults.reset()


@pytest.fixture
def sandbox(emulator_session) -> str:
    return emulator_session.sandbox


@pytest.fixture
def aep(emulator, sandbox) -> AEPClient:
    """An authenticated client for the session's sandbox."""
    return AEPClient(emulator.url, emulator.settings, sandbox)
