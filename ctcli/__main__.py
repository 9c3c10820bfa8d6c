"""Entry point for `python -m ctcli`."""

from ctcli.entry import main

if __name__ == "__main__":
    main()
