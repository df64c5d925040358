"""The README's promises: two set-up commands, and the main one works as written (its other
examples are run by test_docs, as every page's under docs/ is)."""

from __future__ import annotations

import csv
import re
import shlex
import shutil
import subprocess
import sys

import pytest
from helpers import REPO


def setup_commands() -> list[str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)\n```", section, re.S)


def test_the_readme_has_exactly_two_set_up_commands_and_ci_runs_the_test_one():
    main, tests = setup_commands()
    assert main.startswith("pip install . && batchgen run jobs/example.yaml --sandbox")
    assert tests == "pip install '.[test]' && pytest --all"
    assert tests in (REPO / ".ci" / "run").read_text()


@pytest.mark.slow
def test_the_main_command_leaves_playable_videos_and_a_manifest(tmp_path):
    (tmp_path / ".git").mkdir()  # a clone of the project: the ledger goes at its root
    main, _ = setup_commands()
    command = shlex.split(main.split("&&", 1)[1])
    assert command[0] == "batchgen"
    shutil.copytree(REPO / "jobs", tmp_path / "jobs")
    result = subprocess.run(
        [sys.executable, "-m", "batchgen", *command[1:]],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = tmp_path / "outputs" / "sandbox" / "garden-cats"  # a rehearsal: not among real videos
    videos = sorted(out.glob("*.mp4"))
    assert len(videos) == 21
    assert all(v.read_bytes()[4:8] == b"ftyp" for v in videos)
    with open(out / "manifest.csv", newline="") as f:
        assert sorted(r["file"] for r in csv.DictReader(f)) == [v.name for v in videos]
    assert (tmp_path / "batchgen.db").exists()


def _install_lines() -> list[tuple[str, str]]:
    """(page, line) for every `pip install`, `pipx install` or `uv tool install` the README and
    the docs show."""
    found = []
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]:
        for line in page.read_text(encoding="utf-8").splitlines():
            for match in re.finditer(r"(?:pip|pipx|uv tool) install ([^`&|#]+)", line):
                found.append((page.name, match.group(1).strip()))
    return found


def test_no_install_line_can_fetch_a_package_of_another_owner():
    """`pip install 'batchgen[postgres]'` installed someone else's empty `batchgen 0.0.0` from
    the package index. Every install line installs this clone (or a URL of it), never a name."""
    lines = _install_lines()
    assert len(lines) >= 4
    for page, target in lines:
        for requirement in shlex.split(target):
            if requirement.startswith("-"):
                continue
            assert requirement.startswith((".", "git+", "./")), f"{page}: pip install {target}"


def test_the_distribution_is_not_named_as_the_stranger_on_the_index():
    import tomllib

    name = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["name"]
    assert name != "batchgen"  # taken on the index by an unrelated, empty package
