"""``python -m lesionlocator.cli``."""

import sys

from lesionlocator.cli import main

sys.exit(main())
