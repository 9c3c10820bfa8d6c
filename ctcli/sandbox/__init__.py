"""A CleverTap-compatible HTTP server for tests and trials.

It never imports the client's rules: it is the check on them."""

from ctcli.sandbox.server import Sandbox, serve

__all__ = ["Sandbox", "serve"]
