"""A CleverTap-compatible HTTP server for tests and trials.

It never imports the client's rules: it is the check on them. `server` serves HTTP and holds the
`Sandbox` and `serve()`; `rules` is what CleverTap accepts and how it refuses the rest; `faults`
is the fault settings and what they do to a request; `store` is the profiles and statistics."""

from ctcli.sandbox.server import Sandbox, serve

__all__ = ["Sandbox", "serve"]
