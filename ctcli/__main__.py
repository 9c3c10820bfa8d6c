"""Entry point for `python -m ctcli`."""

from ctcli.cli.entry import main

if __name__ == "__main__":
    main()
