"""``python -m bench.meta``: see bench/meta/cli.py."""

import sys

from bench.meta.cli import main

sys.exit(main())
