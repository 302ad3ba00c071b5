"""The ``twin`` command: the composition root, the one place that wires settings, data
base, layers and API together. It stands above every other package; none imports it.

One module per command group (``cli/db.py`` for ``twin db …``); ``cli/main.py`` builds the
command line from them and turns errors a person can act on into one line on stderr.
"""

from cli.main import build_parser, main

__all__ = ["build_parser", "main"]
