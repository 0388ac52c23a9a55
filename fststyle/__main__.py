"""``python -m fststyle COMMAND ...``: the same as the ``fststyle`` console script."""

from fststyle.cli.main import main

main()
