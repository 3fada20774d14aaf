"""``python -m tiergate``: the same as the ``tiergate`` command."""

from tiergate.cli import main

if __name__ == "__main__":  # not again in a body parser process (offload.Parsers: spawn imports the main module)
    main()
