"""Every broken job file is refused with exit 2, a file:line location and a message to act on."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BROKEN = Path(__file__).parent / "broken"

# file → (the file the message points into, line, words the message must contain)
CASES = {
    "syntax.yaml": ("syntax.yaml", 4, "expected ',' or ']'"),
    "tabs.yaml": ("tabs.yaml", 3, "indent with spaces"),
    "unknown_top_key.yaml": ("unknown_top_key.yaml", 2, "did you mean 'defaults'?"),
    "option_typo.yaml": ("option_typo.yaml", 4, "did you mean 'options.aspect_ratio'?"),
    "wrong_type.yaml": ("wrong_type.yaml", 4, 'expected an integer, found string "five"'),
    "enum_typo.yaml": ("enum_typo.yaml", 4, "did you mean '16:9'?"),
    "model_typo.yaml": ("model_typo.yaml", 6, "did you mean 'wan2.2-pro'?"),
    "lite_duration.yaml": ("lite_duration.yaml", 6, "Lite (2-8) has a fixed duration"),
    "lite_duration_from_defaults.yaml": (
        "lite_duration_from_defaults.yaml",
        4,
        "set duration: null for this entry",
    ),
    "lite_480p_via_matrix.yaml": (
        "lite_480p_via_matrix.yaml",
        4,
        "only renders 720p (requests[0], matrix combination",
    ),
    "lite_no_image.yaml": ("lite_no_image.yaml", 3, "needs exactly 1 image"),
    "lite_two_images.yaml": ("lite_two_images.yaml", 5, "takes exactly 1 image"),
    "pro_three_images.yaml": ("pro_three_images.yaml", 5, "1 or 2 image URLs"),
    "fast_no_duration.yaml": ("fast_no_duration.yaml", 5, "need options.duration: 5 or 8"),
    "no_model.yaml": ("no_model.yaml", 3, "missing model"),
    "no_prompt.yaml": ("no_prompt.yaml", 6, "missing prompt"),
    "two_missing_options.yaml": ("two_missing_options.yaml", 4, "missing options.resolution"),
    "csv_unknown_column.yaml": ("unknown_column.csv", 1, "did you mean 'options.duration'?"),
    "csv_bad_cell.yaml": ("bad_cell.csv", 3, "'five' is not a whole number"),
    "csv_rule_broken.yaml": ("csv_rule_broken.yaml", 4, "lite_row.csv row 2 (line 3)"),
    "csv_bad_utf8.yaml": ("latin1.csv", 2, "not valid UTF-8"),
    "missing_prompt_file.yaml": ("missing_prompt_file.yaml", 7, "file not found: "),
    "missing_csv.yaml": ("missing_csv.yaml", 6, "file not found: "),
    "empty_prompt_file.yaml": ("empty_prompt_file.yaml", 7, "holds no prompts"),
    "bad_utf8.yaml": ("bad_utf8.yaml", 3, "not valid UTF-8 (byte 0xe9)"),
    "python_tag.yaml": ("python_tag.yaml", 3, "tag not allowed"),
    "explosion.yaml": (
        "explosion.yaml",
        2,
        "expands to 16 requests, past limits.max_requests (10)",
    ),
    "explosion_default_limit.yaml": (
        "explosion_default_limit.yaml",
        6,
        "more than 10,000 requests",
    ),
    "empty.yaml": ("empty.yaml", 1, "the file is empty"),
    "empty_requests.yaml": ("empty_requests.yaml", 2, "at least one entry"),
    "wrong_version.yaml": ("wrong_version.yaml", 1, "version 1 only"),
    "duplicate_key.yaml": ("duplicate_key.yaml", 4, "given twice"),
    "not_a_mapping.yaml": ("not_a_mapping.yaml", 1, "a job file is a mapping"),
    "bad_url.yaml": ("bad_url.yaml", 7, "image not found"),
    "matrix_axis_not_list.yaml": ("matrix_axis_not_list.yaml", 7, "expected a mapping or a list"),
    "matrix_unknown_axis.yaml": ("matrix_unknown_axis.yaml", 8, "did you mean 'options.duration'?"),
    "prompt_not_text.yaml": ("prompt_not_text.yaml", 6, "put it in quotes"),
    "yes_is_not_a_boolean.yaml": ("yes_is_not_a_boolean.yaml", 4, "a boolean is true or false"),
    "repeat_zero.yaml": ("repeat_zero.yaml", 7, "less than the minimum of 1"),
    # Sent on SQLite, refused by PostgreSQL at the claim (the job stuck there forever).
    "prompt_nul.yaml": ("prompt_nul.yaml", 7, "holds the control character U+0000 at character 6"),
    "prompt_control_from_template.yaml": (
        "prompt_control_from_template.yaml",
        7,
        "holds the control character U+0007 at character 7",
    ),
}


def test_every_file_of_the_corpus_has_a_case():
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(CASES)
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", sorted(CASES))
def test_broken_job_is_refused_with_a_located_message(cli, name, monkeypatch):
    monkeypatch.chdir(BROKEN)
    pointed_file, line, words = CASES[name]
    result = cli("validate", name)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    located = [text for text in result.stderr.splitlines() if f"{pointed_file}:{line}" in text]
    assert located, result.stderr
    assert any(words in text for text in located), result.stderr


def test_python_tags_are_never_executed(cli, monkeypatch):
    monkeypatch.chdir(BROKEN)
    cli("validate", "python_tag.yaml")
    assert not os.path.exists("/tmp/batchgen-pwned")


def test_every_error_is_reported_not_only_the_first(cli, write_job):
    job = write_job(
        """
        version: 1
        defaults:
          model: wan2.2-pro
          options: {prompt_optimization: maybe, aspect_ratio: "5:4", resolution: 480p, duration: 5}
        requests:
          - prompt: A cat
            colour: red
        """
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert any(":8:5:" in text and "unknown field 'colour'" in text for text in lines)


def test_a_missing_job_file(cli, tmp_path):
    result = cli("validate", tmp_path / "nope.yaml")
    assert result.exit_code == 2
    assert "nope.yaml: error: no such file" in result.stderr


def test_json_format_lists_problems_with_their_location(cli, monkeypatch):
    import json

    monkeypatch.chdir(BROKEN)
    result = cli("validate", "--format", "json", "enum_typo.yaml")
    assert result.exit_code == 2
    report = json.loads(result.stdout)
    assert report["valid"] is False
    (problem,) = report["problems"]
    assert (problem["line"], problem["column"], problem["path"]) == (
        4,
        54,
        "defaults.options.aspect_ratio",
    )
    assert problem["hint"] == "did you mean '16:9'?"


def test_a_typo_in_defaults_a_typo_in_options_and_a_bad_value_are_reported_in_one_pass(
    cli, write_job
):
    """A typo in `defaults` stopped the check there, and a typo beside a bad value in one
    options map hid the value until the next pass. The typos are mended as their hints say for
    the rest of the check (and still reported); nothing is sent."""
    job = write_job(
        "version: 1\n"
        "defaults:\n"
        "  modle: wan2.2-pro\n"
        "requests:\n"
        "  - prompt: A cat\n"
        "    model: wan2.2-pro\n"
        '    options: {prompt_optimization: true, aspect_ration: "16:9", resolution: 480p, duration: 10}\n'
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 3, result.stderr
    assert (
        "job.yaml:3:3: error: defaults.modle: unknown field 'modle'; did you mean 'model'?"
        in lines[0]
    )
    assert (
        "requests[0].options.aspect_ration: unknown field" in lines[1]
        and "did you mean 'options.aspect_ratio'?" in lines[1]
    )
    assert (
        "job.yaml:7:" in lines[2]
        and "requests[0].options.duration: WAN 2.2 Pro (2-9) takes duration 5 or 8" in lines[2]
    )
