"""`ctcli configure`: write, list and check credential profiles (placeholder, being built)."""

from __future__ import annotations


def configure() -> None:
    """Create or update a credential profile."""
    raise NotImplementedError
