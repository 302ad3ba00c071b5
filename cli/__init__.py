"""The ``twin`` command: the composition root, the one place that wires settings, data
base, layers and API together. It stands above every other package; none imports it.

``cli/main.py`` declares the command line and maps errors to one line on stderr; each command
group's commands are a module of their own (``cli/db.py`` runs ``twin db …``), and what
they share (consoles, progress bars, ``--json``, ``prepare``) is ``cli/common.py``.
"""

from cli.main import build_parser, main

__all__ = ["build_parser", "main"]
