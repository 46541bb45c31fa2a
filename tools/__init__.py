"""Tools that build and operate the archive, each run as `python -m tools.<name>`.

Importing the package makes the archive's own modules (handler/) importable by the flat names
the archive gives them: tools/packed.py, the one place that does it.
"""

from tools import packed  # noqa: F401
