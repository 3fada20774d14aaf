"""``python -m tiergate``: the same as the ``tiergate`` command."""

from tiergate.cli import main

main()
