"""Shared fixtures: a loopback CleverTap sandbox, and an environment pointing ctcli at it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from ctcli.sandbox import Sandbox

# Shared 2-core machines are noisy: a slow first draw is the machine, not the strategy. No
# deadlines either: tests here assert behaviour, never time.
settings.register_profile("ctcli", suppress_health_check=[HealthCheck.too_slow], deadline=None)
settings.load_profile("ctcli")

SANDBOX_PROJECT_ID = "TEST-ACC"
SANDBOX_PASSCODE = "test-passcode"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started Sandbox on a free loopback port (TEST-ACC / test-passcode), stopped after."""
    with Sandbox(project_id=SANDBOX_PROJECT_ID, passcode=SANDBOX_PASSCODE) as running:
        yield running


CREDENTIAL_VARIABLES = (
    "CLEVERTAP_PROJECT_ID",
    "CLEVERTAP_PASSCODE",
    "CLEVERTAP_REGION",
    "CLEVERTAP_ENDPOINT",
    "CTCLI_PROFILE",
)


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """No credentials from the real environment; a config file of the test's own."""
    for name in CREDENTIAL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("CTCLI_CONFIG", str(tmp_path / "config.toml"))
    return {}


@pytest.fixture
def live(env, sandbox, monkeypatch) -> Sandbox:
    """The sandbox, with CLEVERTAP_* pointing ctcli at it."""
    monkeypatch.setenv("CLEVERTAP_ENDPOINT", sandbox.url)
    monkeypatch.setenv("CLEVERTAP_PROJECT_ID", SANDBOX_PROJECT_ID)
    monkeypatch.setenv("CLEVERTAP_PASSCODE", SANDBOX_PASSCODE)
    return sandbox


@pytest.fixture
def events(tmp_path) -> Path:
    """A file with one identify event."""
    path = tmp_path / "events.ndjson"
    path.write_text('{"type": "identify", "userId": "u1", "traits": {"plan": "pro"}}\n')
    return path
