# SPDX-License-Identifier: MIT
"""python -m gilshim: see gilshim._cli."""
import sys

from gilshim._cli import main

if __name__ == "__main__":
    sys.exit(main())
