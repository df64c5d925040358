from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from batchgen.cli import main
from batchgen.spec import Job, load_job



@pytest.fixture
def write_job(tmp_path: Path):
    """Write a job file (and the files it refers to) into a temporary folder; return its path."""

    def write(text: str, name: str = "job.yaml", files: dict[str, str] | None = None) -> Path:
        for filename, content in (files or {}).items():
            target = tmp_path / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(textwrap.dedent(content), encoding="utf-8")
        path = tmp_path / name
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def load(write_job):
    """Write and load a job file in one step."""

    def load_text(text: str, files: dict[str, str] | None = None) -> Job:
        return load_job(write_job(text, files=files))

    return load_text


@pytest.fixture
def cli():
    """Run the batchgen command line in-process; returns click's Result."""
    runner = CliRunner()

    def invoke(*args: str, **kwargs):
        return runner.invoke(main, [str(a) for a in args], catch_exceptions=False, **kwargs)

    return invoke
