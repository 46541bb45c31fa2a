"""The facade must run without the model stack: it never imports torch or transformers."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]

CHECK = """
import sys
import facade
facade.create_app()
heavy = sorted(name for name in ("torch", "transformers") if name in sys.modules)
print(",".join(heavy) or "none")
"""


def test_creating_the_app_imports_neither_torch_nor_transformers():
    # A fresh interpreter: this test process may have imported them through other tests.
    environ = {"PATH": os.environ.get("PATH", ""), "FACADE_CONTAINER_ID": "import-check"}

    done = subprocess.run(
        [sys.executable, "-c", CHECK], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "none"
