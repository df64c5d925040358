"""The documentation's examples work as written: the README's and every page's under docs/.

Each ```sh block of a page is run, in order, as one bash script in a fresh copy of the
project (no key, no network: the examples use --sandbox), and must exit 0. A block that
cannot run here (it starts a server, or needs the real API) says why in a
`<!-- not run: ... -->` line just above it. Each ```console block whose commands are
`batchgen validate` or `batchgen models` of files in the repository is run too, and every
line it shows must be in what the command prints now, in that order.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->")


@dataclass
class Block:
    page: Path
    line: int  # where the fence opens, 1-based
    lang: str
    text: str
    not_run: str | None  # the reason given, for a block that is not run


def blocks(page: Path) -> list[Block]:
    found: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = re.match(r"```(\w*)$", lines[i])
        if not opening:
            i += 1
            continue
        end = lines.index("```", i + 1)
        above = next((text for text in reversed(lines[:i]) if text.strip()), "")
        reason = NOT_RUN.search(above)
        found.append(
            Block(
                page,
                i + 1,
                opening.group(1),
                "\n".join(lines[i + 1 : end]),
                reason.group(1) if reason else None,
            )
        )
        i = end + 1
    return found


def set_up_section(block: Block) -> bool:
    # The README's two set-up commands are pip installs, run by test_readme and by CI.
    return block.page.name == "README.md" and block.text.startswith("pip install")


def runnable(page: Path) -> list[Block]:
    return [b for b in blocks(page) if b.lang == "sh" and not b.not_run and not set_up_section(b)]


def tools(folder: Path) -> Path:
    """`batchgen` (this Python's) and, where the machine has no sqlite3 shell, a stand-in that
    runs one query through Python's sqlite3, so the ledger recipes are checked everywhere."""
    folder.mkdir()
    shims = {"batchgen": f'exec {shlex.quote(sys.executable)} -m batchgen "$@"\n'}
    if shutil.which("sqlite3") is None:
        shims["sqlite3"] = (
            f"exec {shlex.quote(sys.executable)} -c "
            '\'import sqlite3, sys; [print(*row, sep="|") for row in '
            'sqlite3.connect(sys.argv[1]).execute(sys.argv[2])]\' "$@"\n'
        )
    for name, body in shims.items():
        (folder / name).write_text("#!/bin/sh\n" + body)
        (folder / name).chmod(0o755)
    return folder


def test_every_block_left_out_says_why_and_every_page_is_in_the_site():
    for page in PAGES:
        for block in blocks(page):
            assert block.not_run is None or block.not_run.strip(), f"{page.name}:{block.line}"
    site = (REPO / "mkdocs.yml").read_text()
    assert all(page.name in site for page in PAGES if page.parent.name == "docs")


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if runnable(p)], ids=lambda p: str(p.relative_to(REPO))
)
def test_the_sh_examples_of_a_page_run_as_written(page, tmp_path):
    project = tmp_path / "project"
    project.mkdir()
    (project / ".git").mkdir()  # a clone: its ledger goes at its root
    shutil.copytree(REPO / "jobs", project / "jobs")
    bin_dir = tools(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIXWITH_", "BATCHGEN_"))}
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
        BATCHGEN_TESTING="1",
        BATCHGEN_SANDBOX_TIME_SCALE=os.environ.get("BATCHGEN_SANDBOX_TIME_SCALE", "0.02"),
    )  # retries without their backoff sleeps
    script = "\n".join(f"# {b.page.name}:{b.line}\n{b.text}" for b in runnable(page))
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, (
        f"{script}\n--- stdout\n{result.stdout}\n--- stderr\n{result.stderr}"
    )
    assert "Traceback" not in result.stderr


def console_examples() -> list[tuple[Block, list[str], list[str]]]:
    """(block, command, lines shown) for the console examples that can be checked here."""
    examples = []
    for page in PAGES:
        for block in blocks(page):
            if block.lang != "console" or block.not_run:
                continue
            lines = block.text.splitlines()
            if not lines or not lines[0].startswith("$ batchgen "):
                continue
            command = shlex.split(lines[0][2:])
            files = [a for a in command[2:] if not a.startswith("-")]
            checkable = command[1] in ("validate", "models") and all(
                (REPO / f).exists() for f in files
            )
            if checkable and not any(text.startswith("$ ") for text in lines[1:]):
                examples.append((block, command, lines[1:]))
    return examples


@pytest.mark.parametrize(
    "example", console_examples(), ids=lambda e: f"{e[0].page.name}:{e[0].line}"
)
def test_a_console_example_shows_what_the_command_prints(example):
    block, command, shown = example
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    printed = iter((result.stdout + result.stderr).splitlines())
    missing = [text for text in shown if text not in printed]  # in order: `in` consumes
    assert not missing, (
        f"{block.page.name}:{block.line} shows lines the command does not print: {missing}"
    )


def test_there_are_console_examples_to_check():
    assert len(console_examples()) >= 2
