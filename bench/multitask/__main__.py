import sys

from bench.multitask.cli import main

sys.exit(main())
