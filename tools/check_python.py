"""Exit with a message unless this Python is one that pyproject.toml's requires-python allows.

`make install` runs it with the interpreter it is about to make .venv with (standard library only,
since nothing is installed yet): a host whose python3 is too old or too new learns which versions
work and how to name one, before anything is downloaded.
"""

import re
import sys
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# requires-python as this project writes it: a lower and an upper bound of minor versions. Read
# with a pattern, not tomllib, so that the message also reaches a Python older than 3.11.
REQUIRES_PYTHON = re.compile(r'^requires-python\s*=\s*"([^"]*)"', re.MULTILINE)
BOUNDS = re.compile(r">=\s*(\d+)\.(\d+)\s*,\s*<\s*(\d+)\.(\d+)")


def supported_range(pyproject_text):
    """Return ((lowest major, minor), (first major, minor) past the range) from requires-python."""
    spec = REQUIRES_PYTHON.search(pyproject_text).group(1)
    match = BOUNDS.fullmatch(spec.strip())
    if match is None:
        raise ValueError(f"requires-python {spec!r} is not of the form '>=3.X,<3.Y'")
    low_major, low_minor, high_major, high_minor = map(int, match.groups())
    return (low_major, low_minor), (high_major, high_minor)


def version_problem(version, supported):
    """Return what is wrong with `version` (major, minor) for the range, or None when it is inside."""
    low, high = supported
    if low <= tuple(version[:2]) < high:
        return None
    newest = (high[0], high[1] - 1)
    return (
        f"Python {version[0]}.{version[1]} is not supported: the service needs Python "
        f"{low[0]}.{low[1]} to {newest[0]}.{newest[1]} (pyproject.toml's requires-python). Install one "
        f"(your distribution's python3.{low[1]}, pyenv, or `uv python install {low[0]}.{low[1]}`) and name "
        f"it: make install PYTHON=/path/to/python{low[0]}.{low[1]}"
    )


def main():
    """Check the running interpreter; exit 1 with the message when it is outside the range."""
    problem = version_problem(sys.version_info, supported_range(PYPROJECT.read_text()))
    if problem:
        sys.exit(f"error: {sys.executable}: {problem}")


if __name__ == "__main__":
    main()
