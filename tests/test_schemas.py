"""The shipped schemas: real JSON Schema, consistent with the catalogue, usable by other tools."""

from __future__ import annotations

import json
import subprocess
import sys

import jsonschema
import pytest
from helpers import REPO

from batchgen.jobs import schemas
from batchgen.providers.pixwith import models


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_schemas_are_valid_draft_2020_12(name):
    schema = schemas.schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("name", schemas.SCHEMA_NAMES)
def test_the_installed_schema_is_the_one_in_the_repo(cli, name):
    # In CI batchgen is installed as a wheel: this checks the wheel ships schemas/ unchanged.
    printed = cli("schema", name).stdout
    assert json.loads(printed) == json.loads((REPO / "schemas" / f"{name}.schema.json").read_text())


def test_the_catalogue_agrees_with_its_request_schema():
    request = models.load("request.schema.json")
    ids = [m.id for m in models.catalogue()]
    assert request["$defs"]["model_id"]["enum"] == ids
    ruled = set()
    for rule in request["allOf"]:
        condition = rule["if"]["properties"]["model_id"]
        ruled.update(condition.get("enum", [condition.get("const")]))
    assert ruled == set(ids), "every model needs its rules in request.schema.json"


def test_no_request_rule_reads_the_prompt_except_its_own_subschema():
    # schemas.BodyChecker relies on this to check a job's bodies once per distinct rest.
    request = models.load("request.schema.json")
    found = []

    def walk(node, path):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "prompt" or value == "prompt":
                    found.append(path + (key,))
                walk(value, path + (key,))
        elif isinstance(node, list):
            for i, value in enumerate(node):
                if value == "prompt":
                    found.append(path + (i,))
                walk(value, path + (i,))

    walk(request, ())
    assert sorted(found) == sorted([("required", 0), ("properties", "prompt"), ("$defs", "prompt")])


def test_the_prompt_rule_is_read_whole_by_its_shortcut():
    # schemas.plain_prompt stands in for the prompt's subschema on every text prompt (one scan
    # in C): it reads the rules it knows of, and agrees with the validator.
    prompt = models.load("request.schema.json")["$defs"]["prompt"]
    assert prompt == schemas.schema("job")["$defs"]["prompt"]  # the job file's own rule
    assert set(prompt) <= {"type", "minLength", "maxLength", "pattern", "description", "title"}
    validator = schemas.validator("job", "/$defs/prompt")
    for text in [
        "",
        "a cat",
        "tab\there\r\nand line",
        "\x00",
        "bell\a",
        "\x85",
        "\ud800",
        "é" * 10_000,
        "é" * 10_001,
    ]:
        assert schemas.plain_prompt(text) == validator.is_valid(text), repr(text[:20])


def test_the_example_job_shows_every_feature_of_the_format():
    text = (REPO / "jobs" / "example.yaml").read_text()
    assert text.startswith("# yaml-language-server: $schema=../schemas/job.schema.json")
    for feature in (
        "name:",
        "limits:",
        "defaults:",
        "matrix:",
        "exclude:",
        "include:",
        "rows:",
        "repeat:",
        "{file: prompts/",
        "null",
    ):
        assert feature in text, feature


def test_check_jsonschema_accepts_the_shipped_jobs():
    jobs = sorted(str(p) for p in (REPO / "jobs").glob("*.yaml"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--schemafile",
            str(REPO / "schemas" / "job.schema.json"),
            *jobs,
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_check_jsonschema_rejects_a_broken_job():
    broken = REPO / "tests" / "broken" / "unknown_top_key.yaml"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--schemafile",
            str(REPO / "schemas" / "job.schema.json"),
            str(broken),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1


def test_a_prompt_past_its_length_is_refused_without_being_printed(cli, write_job):
    """A 30 MB prompt was sent; now a prompt is at most 10,000 characters, and the message
    names its length, not its text."""
    long = "a cat " * 2_000  # 12,000 characters
    job = write_job(
        "version: 1\n"
        "defaults:\n  model: wan2.2-pro\n"
        '  options: {prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}\n'
        f"requests:\n  - prompt: {long.strip()}\n  - prompt: a short one\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    assert "requests[0].prompt: 11,999 characters; at most 10,000 are allowed" in result.output
    assert "a cat a cat" not in result.output and "requests[1]" not in result.output
