"""The command line: options in, the library's calls, results printed.

Kept empty: `ctcli.cli.entry` must load nothing before it has set up its signal handlers."""
