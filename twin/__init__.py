"""The one map (一张图): core of the city's spatial digital twin.

The core knows no HTTP: settings, data base, schema, domain services and the CLI.
"""

__version__ = "0.1.0"
