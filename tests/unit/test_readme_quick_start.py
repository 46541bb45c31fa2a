"""The README's clean-machine block, which tests/docker/test_clean_machine.py runs as written, is there and whole."""

import pytest

from tests.conftest import PROJECT_DIR
from tests.readme import readme_commands


def test_readme_marks_the_quick_start_that_the_clean_machine_test_runs():
    commands = readme_commands((PROJECT_DIR / "README.md").read_text(encoding="utf-8"))

    assert [c.split()[0:2] for c in commands if c.startswith("make ")] == [["make", "up"], ["make", "down"]]
    assert any("test_app.py" in command for command in commands), commands
    assert commands[-1].startswith("make down"), commands


def test_clean_machine_block_joins_continued_lines_and_drops_comment_lines():
    text = (
        "intro\n<!-- clean-machine: start -->\n```bash\n# set-up\nsudo apt-get install -y \\\n    make\n\n"
        "make up   # starts\n```\n<!-- clean-machine: end -->\n```bash\nmake test\n```\n"
    )

    assert readme_commands(text) == ["sudo apt-get install -y      make", "make up   # starts"]


@pytest.mark.parametrize(
    "text",
    ["```bash\nmake up\n```\n", "<!-- clean-machine: start -->\nmake up\n<!-- clean-machine: end -->\n"],
    ids=["no markers", "no fenced block"],
)
def test_clean_machine_block_missing_is_an_error(text):
    with pytest.raises(ValueError, match="clean-machine"):
        readme_commands(text)
