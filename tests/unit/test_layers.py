"""The import layers written in pyproject.toml ([tool.importlinter]) hold, and break where they should."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_DIR

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"
CHECKED = ("bench", "tests", "stack", "devtools", "tools", "facade", "handler")

pytestmark = pytest.mark.skipif(not LINT_IMPORTS.is_file(), reason="needs import-linter: make install-dev")


def lint_imports(root):
    """Run lint-imports on the project at `root`; return the finished process."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, capture_output=True, text=True, timeout=120, check=False
    )


def python_copy(target):
    """Copy the project's Python files and its pyproject.toml under `target`; return `target`."""
    for package in CHECKED:
        shutil.copytree(
            PROJECT_DIR / package, target / package, ignore=shutil.ignore_patterns("__pycache__", "results", "*.png")
        )
    shutil.copy(PROJECT_DIR / "pyproject.toml", target)
    return target


def test_the_project_keeps_its_import_layers():
    result = lint_imports(PROJECT_DIR)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("module", "added_import"),
    [
        ("facade/routes.py", "import stack.launcher"),  # the product importing the harness
        ("handler/sentiment_config.py", "import stack.processes"),
        ("facade/settings.py", "import tools.torchserve_config"),  # the facade reaching the model side
        ("bench/load.py", "import tests.conftest"),  # a benchmark leaning on the tests
        ("bench/serving.py", "import bench.run"),  # a cycle: bench.run imports bench.serving
        ("stack/processes.py", "import stack.launcher"),  # a cycle: the launcher imports processes
    ],
)
def test_the_contract_breaks_on(tmp_path, module, added_import):
    root = python_copy(tmp_path)
    with (root / module).open("a", encoding="utf-8") as source:
        source.write(f"\n{added_import}\n")
    result = lint_imports(root)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
