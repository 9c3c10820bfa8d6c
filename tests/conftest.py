"""Shared fixtures: a running loopback CleverTap sandbox."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ctcli.sandbox import Sandbox

SANDBOX_PROJECT_ID = "TEST-ACC"
SANDBOX_PASSCODE = "test-passcode"


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    """A started Sandbox on a free loopback port (TEST-ACC / test-passcode), stopped after."""
    with Sandbox(project_id=SANDBOX_PROJECT_ID, passcode=SANDBOX_PASSCODE) as running:
        yield running
