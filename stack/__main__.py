"""python -m stack up|down|status|logs: the native launcher (stack/launcher.py)."""

import sys

from stack.launcher import main

sys.exit(main())
