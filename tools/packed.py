"""Where the modules packed into the .mar live, made importable the way the archive imports them.

Inside the archive the handler modules sit flat next to each other and import each other by
top-level name; the tools (this folder) import them the same way. This is the one place that
puts handler/ on sys.path; the package's __init__ imports it, so every `tools.<name>` can.
"""

import sys
from pathlib import Path

TOOLS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = TOOLS_DIR.parent
HANDLER_DIR = PROJECT_DIR / "handler"

if str(HANDLER_DIR) not in sys.path:
    sys.path.insert(1, str(HANDLER_DIR))
