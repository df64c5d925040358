"""The model catalogue: one file per family, the page's examples accepted, one broken
variant per rule refused with a hint naming the models that would take it, the schemas derived
from the files, unverified models behind a flag, several videos per task, `batchgen models`."""

from __future__ import annotations

import copy
import csv
import json
import re

import jsonschema
import pytest
from helpers import REPO

from batchgen.errors import JobError
from batchgen.jobs.expand import identity
from batchgen.jobs.validate import validate_job
from batchgen.providers.pixwith import model_schema, models

CATALOGUE = models.catalogue()
REQUEST = jsonschema.Draft202012Validator(models.load("request.schema.json"))
UNION = {
    name: models.load("request.schema.json")["$defs"][name].get("enum")
    for name in models.option_names()
}
MOST_IMAGES = max(m.images[1] for m in CATALOGUE)
IMAGE = "https://cdn.pixwith.ai/images/a.jpeg"


def test_every_family_file_is_well_formed():
    family = jsonschema.Draft202012Validator(
        json.loads((models.SCHEMAS / "model-family.schema.json").read_text())
    )
    for path in sorted((models.SCHEMAS / "models").glob("*.json")):
        errors = [e.message for e in family.iter_errors(json.loads(path.read_text()))]
        assert errors == [], (path.name, errors)
    ids = [m.id for m in CATALOGUE]
    names = [m.name for m in CATALOGUE]
    assert len(set(ids)) == len(ids) and len(set(names)) == len(names)
    assert [m.id for m in CATALOGUE[:3]] == [
        "2-8",
        "2-9",
        "2-10",
    ]  # the sandbox's task ids count from these


def test_the_committed_schemas_are_derived_from_the_catalogue():
    # After editing a family file: python -m batchgen.providers.pixwith.model_schema
    request = (models.SCHEMAS / "request.schema.json").read_text()
    assert request == model_schema.schema_text(model_schema.request_schema())


def test_wan_2_2_identities_are_unchanged(write_job):
    # The API's documented first example, expanded from a job file: the key every earlier version of
    # batchgen computed for it (so ledgers made before the catalogue keep their rows).
    job = write_job(
        "version: 1\ndefaults: {model: wan2.2-pro, options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}}\n"
        "requests:\n  - prompt: A cat walking in the garden\n"
    )
    (request,) = validate_job(str(job)).requests()
    assert request.key == "5fc5f5f02001e55e9e9be0664f27cb81c7f3b2b2907177e7609d77ebf243681d"
    assert request.key == identity("https://api.pixwith.ai", request.body, 0)


# -- each page's examples -------------------------------------------------------------------------

EXAMPLES = [
    (family, example)
    for family, data in sorted(models.families().items())
    for example in data["examples"]
]


@pytest.mark.parametrize(
    "family, example", EXAMPLES, ids=[f"{f}: {e['title'][:40]}" for f, e in EXAMPLES]
)
def test_each_example_of_a_page_is_accepted_or_its_model_is_unverified(family, example):
    body = example["body"]
    model = models.lookup(body["model_id"])
    if model is not None and model.verified:
        assert REQUEST.is_valid(body), [e.message for e in REQUEST.iter_errors(body)]
        return
    # An example that breaks its own page's table: the family's models say so and why.
    unverified = [m for m in CATALOGUE if m.family == family and not m.verified]
    assert unverified and all(m.why_unverified for m in unverified)
    if model is None:
        assert any(body["model_id"] in m.why_unverified for m in unverified)


def test_every_verified_model_has_an_example_from_its_page():
    covered = {example["body"]["model_id"] for _, example in EXAMPLES}
    assert [m.name for m in CATALOGUE if m.verified and m.id not in covered] == []


# -- one broken variant per rule ------------------------------------------------------------------


def valid_body(model: models.Model) -> dict:
    """The smallest body the model's rules allow (each option at its first value)."""
    options = {"prompt_optimization": True}
    for option in model.options.values():
        if not option.optional and not (option.text_to_video_only and model.images[0] > 0):
            options[option.name] = option.values[0] if option.values is not None else True
    body = {"prompt": "A cat walking in the garden", "model_id": model.id, "options": options}
    if model.images[0]:
        body["image_urls"] = [IMAGE] * model.images[0]
    return body


def broken_variants(model: models.Model):
    """(rule, body, the field it breaks, words the message has, words the hint has)."""
    base = valid_body(model)
    for name in models.option_names()[1:]:
        rule = model.options.get(name)
        if rule is None:  # an option of other models
            taker = models.accepting(name)[0]
            body = copy.deepcopy(base)
            body["options"][name] = (
                taker.options[name].values[0] if taker.options[name].values else True
            )
            yield f"no {name}", body, f"options.{name}", "not", f"{name} is taken by"
            continue
        outside = [v for v in UNION[name] or () if v not in (rule.values or ())]
        if rule.values is not None:
            body = copy.deepcopy(base)
            body["options"][name] = outside[0] if outside else 99
            yield (
                f"{name} value",
                body,
                f"options.{name}",
                rule.words() if outside else "is not one of",
                "is taken by" if outside else "",
            )
        if not rule.optional and not rule.text_to_video_only:
            body = copy.deepcopy(base)
            del body["options"][name]
            yield (
                f"{name} required",
                body,
                "",
                name,
                "set it in",
            )  # located at the entry that lacks it
        if rule.text_to_video_only:
            body = copy.deepcopy(base)
            body["image_urls"] = [IMAGE]
            body["options"][name] = rule.values[0]
            yield (
                f"{name} only without an image",
                body,
                f"options.{name}",
                "only for text-to-video",
                "",
            )
    low, high = model.images
    if high < MOST_IMAGES:
        body = copy.deepcopy(base)
        body["image_urls"] = [IMAGE] * (high + 1)
        for (
            option
        ) in model.options.values():  # an image-to-video request: nothing text-to-video only
            if option.text_to_video_only:
                body["options"].pop(option.name, None)
        yield "too many images", body, "images", "image", "taken by"
    if low > 0:
        body = copy.deepcopy(base)
        del body["image_urls"]
        yield "no image", body, "", "image", "no image: taken by"


CASES = [
    (model, rule, body, field, words, hint)
    for model in CATALOGUE
    for rule, body, field, words, hint in broken_variants(model)
]


def job_of(body: dict) -> str:
    entry = {
        "prompt": body["prompt"],
        "model": models.label(body["model_id"]),
        "options": body["options"],
    }
    if "image_urls" in body:
        entry["image_urls"] = body["image_urls"]
    return "version: 1\nrequests:\n  - " + json.dumps(entry) + "\n"


@pytest.mark.parametrize("model", CATALOGUE, ids=[m.name for m in CATALOGUE])
def test_the_rules_make_a_valid_body_for_each_model(model):
    assert REQUEST.is_valid(valid_body(model)), [
        e.message for e in REQUEST.iter_errors(valid_body(model))
    ]


@pytest.mark.parametrize(
    "model, rule, body, field, words, hint", CASES, ids=[f"{c[0].name}: {c[1]}" for c in CASES]
)
def test_each_rule_broken_is_refused_with_a_hint(write_job, model, rule, body, field, words, hint):
    assert not REQUEST.is_valid(body)
    with pytest.raises(JobError) as refused:
        validate_job(str(write_job(job_of(body))), allow_unverified=True)
    problems = refused.value.problems
    assert len(problems) == 1, [str(p) for p in problems]
    problem = problems[0]
    assert problem.line == 3  # located at the entry (or the field inside it)
    assert problem.path.startswith("requests[0]") and problem.path.endswith(field), str(problem)
    assert words in problem.message + (problem.hint or ""), str(problem)
    assert hint in (problem.hint or ""), str(problem)


def test_an_option_of_another_model_names_who_takes_it(write_job):
    body = valid_body(models.lookup("kling2.5"))
    body["options"]["fix_camera"] = True
    with pytest.raises(JobError) as refused:
        validate_job(str(write_job(job_of(body))))
    (problem,) = refused.value.problems
    assert (
        problem.message
        == "Kling 2.5 (2-1) does not take options.fix_camera (an option of Seedance 1.0)"
    )
    assert "fix_camera is taken by seedance1.0-lite, seedance1.0-pro" in problem.hint


# -- unverified models ----------------------------------------------------------------------------


def test_an_unverified_model_needs_the_flag_and_validate_says_why(cli, write_job):
    job = write_job(job_of(valid_body(models.lookup("wan2.5-fast"))))
    refused = cli("validate", job)
    assert refused.exit_code == 2
    assert (
        "wan2.5-fast (2-14) is unverified: its page's table gives model_id 2-14 for Fast, but the page's Fast example sends 3-14"
        in refused.output
    )
    assert "--allow-unverified-models" in refused.output
    assert cli("validate", job, "--allow-unverified-models").exit_code == 0
    assert (
        cli("plan", job).exit_code == 2
        and cli("plan", job, "--allow-unverified-models").exit_code == 0
    )


def test_the_sandbox_refuses_nothing_the_schema_accepts_for_an_unverified_model(
    world, write_job, monkeypatch
):
    env = world(time_scale=0)
    monkeypatch.chdir(env.tmp)
    job = write_job(job_of(valid_body(models.lookup("seedance1.0-pro"))))
    assert env.cli("run", job, "--yes").exit_code == 2  # nothing sent without the flag
    assert env.created_bodies() == {}
    assert env.cli("run", job, "--yes", "--allow-unverified-models").exit_code == 0
    assert sum(env.created_bodies().values()) == 1


# -- several videos per task ----------------------------------------------------------------------


def test_num_outputs_makes_that_many_files_in_the_downloads_manifest_and_gallery(
    world, write_job, monkeypatch
):
    env = world(time_scale=0)
    monkeypatch.chdir(env.tmp)
    job = write_job(
        "version: 1\nname: many\nrequests:\n"
        "  - {prompt: A fox in the snow, model: pixverse-v5, id: fox,"
        " options: {prompt_optimization: true, num_outputs: 3, resolution: 540p, aspect_ratio: '1:1', duration: 5}}\n"
        "  - {prompt: A fox in the snow, model: kling2.5, id: fox-kling, options: {prompt_optimization: true, aspect_ratio: '1:1', duration: 5}}\n"
    )
    result = env.cli("run", job, "--yes", "--rpm", "0", "--wait", "--download", "--gallery")
    assert result.exit_code == 0, result.output
    folder = env.outputs("many")
    assert sorted(p.name for p in folder.glob("*.mp4")) == [
        "fox-kling.mp4",
        "fox_1.mp4",
        "fox_2.mp4",
        "fox_3.mp4",
    ]
    with open(folder / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4 and len({r["url"] for r in rows}) == 4
    page = (folder / "index.html").read_text()
    assert page.count("<video") == 4
    tiles = re.findall(r"<figure.*?</figure>", page, re.S)
    (fox,) = [tile for tile in tiles if "<b>fox</b>" in tile]
    assert fox.count("<video") == 3  # the three videos of one task, in one tile


# -- the command ----------------------------------------------------------------------------------


def test_models_lists_every_model_with_its_rules(cli):
    result = cli("models")
    assert result.exit_code == 0
    for model in CATALOGUE:
        assert model.name in result.output and model.id in result.output
    assert "unverified: seedance1.0-pro: model_id 2-21 is also given to Sora 2 Pro" in result.output
    rules = cli("models", "--rules").output
    assert "  options.fix_camera: true or false" in rules and "  options.duration: 3 to 10" in rules
    assert "(text-to-video only: with an image it follows the image)" in rules
    listed = [json.loads(line) for line in cli("models", "--json").output.splitlines()]
    assert [m["name"] for m in listed] == [m.name for m in CATALOGUE]
    kling = next(m for m in listed if m["name"] == "kling2.6")
    assert kling["options"]["sound"] == {
        "values": [True, False],
        "optional": False,
        "text_to_video_only": False,
    }
    assert kling["images"] == {"min": 0, "max": 1} and kling["verified"] is True


def test_the_comparison_job_runs_four_models_into_one_gallery(world, monkeypatch):
    import shutil

    env = world(time_scale=0)
    shutil.copytree(REPO / "jobs", env.tmp / "jobs")
    monkeypatch.chdir(env.tmp)
    result = env.cli(
        "run", "jobs/models.yaml", "--yes", "--rpm", "0", "--wait", "--download", "--gallery"
    )
    assert result.exit_code == 0, result.output
    page = (env.outputs("compare-models") / "index.html").read_text()
    header = re.search(r"<thead>(.*?)</thead>", page, re.S).group(1)
    columns = re.findall(r"<th scope=col>([^<]+)</th>", header)[
        1:
    ]  # in the order the tasks were submitted
    assert sorted(columns) == ["kling2.6", "seedance1.0-lite", "veo3-fast", "wan2.2-pro"]
    assert page.count("<tr><th scope=row>") == 2  # one row per prompt
    assert page.count("<video") == 10  # Seedance makes two videos per task


# -- the sandbox judges every body as the validator does ------------------------------------------


def test_the_sandbox_accepts_each_valid_body_and_refuses_each_broken_one():
    import httpx

    from batchgen.providers.pixwith.sandbox import TEST_KEY, running

    with (
        running() as sandbox,
        httpx.Client(base_url=sandbox.base_url, headers={"Api-Key": TEST_KEY}) as client,
    ):
        for model in CATALOGUE:
            answer = client.post("/api/task/create", json=valid_body(model)).json()
            assert answer["code"] == 1, (model.name, answer)
        for model, rule, body, *_ in CASES:
            answer = client.post("/api/task/create", json=body).json()
            assert answer["code"] == 0, (model.name, rule, answer)
        for _, example in EXAMPLES:
            accepted = client.post("/api/task/create", json=example["body"]).json()["code"] == 1
            assert accepted == REQUEST.is_valid(example["body"]), example["title"]


def test_the_models_page_shows_the_models_as_batchgen_models_prints_them(cli):
    page = (REPO / "docs" / "models.md").read_text()
    shown = page.split("$ batchgen models\n", 1)[1].split("```", 1)[0]
    assert shown == cli("models").output
