"""``python -m cli``: the ``twin`` command."""

import sys

from cli.main import main

sys.exit(main())
