"""Entry point for `python -m ctcli`."""

from ctcli.cli import main

if __name__ == "__main__":
    main()
