"""The README's clean-machine block: the quick start's commands, as tests/docker/test_clean_machine.py runs them."""

import re

BLOCK_START = "<!-- clean-machine: start"
BLOCK_END = "<!-- clean-machine: end -->"


def readme_commands(text):
    """Return the commands of the README's clean-machine block: one per line, continuations joined."""
    if BLOCK_START not in text or BLOCK_END not in text:
        raise ValueError(f"README.md has no {BLOCK_START} ... {BLOCK_END} block")
    block = text.split(BLOCK_START, 1)[1].split(BLOCK_END, 1)[0]
    fenced = re.search(r"^```(?:bash|sh|shell)?\n(.*?)^```", block, re.DOTALL | re.MULTILINE)
    if fenced is None:
        raise ValueError("README.md's clean-machine block holds no fenced code block")
    commands, pending = [], ""
    for line in fenced.group(1).splitlines():
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = (pending + line).strip()
        pending = ""
        if command and not command.startswith("#"):
            commands.append(command)
    return commands
