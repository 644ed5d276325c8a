"""``python -m cachekit``: the same command line as the ``cachekit`` script."""

from __future__ import annotations

import sys

from .advisor.cli import main

if __name__ == "__main__":
    sys.exit(main())
