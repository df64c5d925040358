"""Prompt templates, vars and labels: `{{ name }}` filled from vars in defaults,
entries, matrix axes and CSV columns; an `id` per request that names its files; `meta` kept
beside it. Neither vars, id nor meta is sent; the rendered prompt is."""

from __future__ import annotations

import csv
import hashlib
import json

import pytest
from helpers import PRO_DEFAULTS

from batchgen.jobs.expand import canonical_json, expand
from batchgen.jobs.spec import load_job

VARS_JOB = (
    "version: 1\n"
    "defaults:\n"
    "  model: wan2.2-pro\n"
    "  vars: {place: the garden}\n"
    "  options: {prompt_optimization: true, aspect_ratio: 16:9, resolution: 480p, duration: 5}\n"
    "requests:\n"
    "  - prompt: A {{ animal }} in {{ place }}\n"
    "    matrix: {vars.animal: [cat, dog]}\n"
    "    include: [{vars.animal: owl, vars.place: the barn}]\n"
    "  - rows: {file: shots.csv}\n"
    "    prompt: Shot {{ shot }}, a {{ animal }}\n"
)
SHOTS = "vars.shot,vars.animal\n12,fox\n13,hare\n"


def test_vars_fill_the_prompt_from_every_layer_and_the_rendered_prompt_is_sent(load):
    job = load(VARS_JOB, files={"shots.csv": SHOTS})
    prompts = [r.body["prompt"] for r in expand(job)]
    assert prompts == [
        "A cat in the garden",
        "A dog in the garden",
        "A owl in the barn",
        "Shot 12, a fox",
        "Shot 13, a hare",
    ]
    for request in expand(job, "https://api.pixwith.ai"):
        assert "vars" not in request.body and "{{" not in request.body["prompt"]
        document = canonical_json(
            {"api": "https://api.pixwith.ai", "body": request.body, "variant": 0}
        )
        assert (
            request.key == hashlib.sha256(document.encode()).hexdigest()
        )  # the identity holds the rendered prompt


def test_a_template_equal_to_a_plain_prompt_is_the_same_request(load):
    templated = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: 'A {{ a }}', vars: {a: cat}}\n"
    )
    plain = load("version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: A cat}\n")
    assert [r.key for r in expand(templated)] == [r.key for r in expand(plain)]


def test_an_undefined_name_is_an_error_at_the_prompts_line(cli, write_job):
    job = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - prompt: A {{ animl }}\n    matrix: {vars.animal: [cat]}\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    assert (
        "job.yaml:7:13: error: requests[0].prompt: 'animl' is undefined (vars here: animal)"
        in result.stderr
    )


def test_a_template_syntax_error_is_located(cli, write_job):
    job = write_job(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: 'A {{ cat', vars: {cat: x}}\n"
    )
    result = cli("validate", job)
    assert (
        result.exit_code == 2
        and "job.yaml:7:" in result.stderr
        and "template syntax error" in result.stderr
    )


def test_templates_are_sandboxed(cli, write_job):
    job = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - prompt: \"{{ ''.__class__.__mro__[1].__subclasses__() }}\"\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 2 and "template error" in result.stderr


def test_what_renders_differently_each_time_is_refused(cli, write_job):
    """A prompt is its request's identity: one that changed from run to run (Jinja's `random`
    filter, its `lipsum` global) would be a new request on every rerun, sent and billed again."""
    for prompt in ("A {{ ['cat', 'dog', 'fox', 'owl'] | random }}", "A {{ lipsum(1) }}"):
        job = write_job("version: 1\n" + PRO_DEFAULTS + f'requests:\n  - prompt: "{prompt}"\n')
        result = cli("validate", job)
        assert result.exit_code == 2, prompt
        assert (
            "job.yaml:7:13:" in result.stderr
            and "must render the same on every run" in result.stderr
        )


def test_an_unused_var_is_a_warning(cli, write_job):
    job = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: 'A {{ a }}', vars: {a: cat, spare: 1}}\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 0
    assert (
        "warning: requests[0].vars.spare: var 'spare' is not used by the prompt or the id"
        in result.stderr
    )


def test_all_template_mistakes_in_one_pass(cli, write_job):
    job = write_job(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n"
        "  - prompt: A {{ nope }}\n"
        "  - prompt: B {{ also_nope }}\n"
        "  - {prompt: C, options: {duration: 7}}\n"
        "  - matrix: {prompt: {file: missing.txt}}\n"
        "  - {prompt: D, model: wan2.2-lite}\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    # A structural mistake (duration 7), a missing file and per-request errors (templates,
    # Lite without an image), in other entries: all reported by one validate.
    assert "'nope' is undefined" in result.stderr and "'also_nope' is undefined" in result.stderr
    assert "requests[2].options.duration" in result.stderr
    assert "file not found" in result.stderr and "missing.txt" in result.stderr
    assert "requests[4]" in result.stderr and "image" in result.stderr


# -- labels ---------------------------------------------------------------------------------------


LABELLED = (
    "version: 1\nname: shots\n" + PRO_DEFAULTS + "requests:\n"
    "  - prompt: A {{ animal }}\n"
    "    matrix: {vars.animal: [cat, dog], model: [wan2.2-pro, wan2.2-fast]}\n"
    '    id: "{{ animal }}-{{ model }}"\n'
    "    meta: {scene: 4}\n"
    "  - rows: {file: shots.csv}\n"
)
LABELLED_CSV = "prompt,id,meta.shot\nA fox,shot-12,12\nA hare,shot-13,13\n"


def test_an_id_sees_the_vars_and_the_model_and_names_each_request(load):
    job = load(LABELLED, files={"shots.csv": LABELLED_CSV})
    requests = list(expand(job))
    assert [r.label for r in requests] == [
        "cat-wan2.2-pro",
        "cat-wan2.2-fast",
        "dog-wan2.2-pro",
        "dog-wan2.2-fast",
        "shot-12",
        "shot-13",
    ]
    assert requests[0].meta == {"scene": 4} and requests[4].meta == {"shot": "12"}
    assert all("id" not in r.body and "meta" not in r.body for r in requests)


def test_a_duplicate_id_after_expansion_is_an_error_at_the_id(cli, write_job):
    job = write_job(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - matrix: {prompt: [a, b]}\n    id: same\n"
    )
    result = cli("validate", job)
    assert (
        result.exit_code == 2
        and "job.yaml:8:9: error: requests[0].id: id 'same' is given to more than one request"
        in result.stderr
    )
    variants = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: a, id: 'a-{{ variant }}', repeat: 2}\n",
        name="v.yaml",
    )
    assert cli("validate", variants).exit_code == 0


MAKES_TOO_MUCH = "a template may make at most 10,000 characters"
TAKES_TOO_LONG = "a template may take at most 100,000 steps"


@pytest.mark.parametrize(
    "template, refusal",
    [
        ("{{ 'x' * 10**9 }}", MAKES_TOO_MUCH),
        ("{{ [1] * 10**9 }}", MAKES_TOO_MUCH),
        ("{{ 10 ** 10 ** 10 }}", MAKES_TOO_MUCH),
        ("{{ 'x' | center(10**9) }}", MAKES_TOO_MUCH),
        ("{{ 'x'.ljust(10**9) }}", MAKES_TOO_MUCH),
        ("{{ '%*d' | format(10**9, 1) }}", MAKES_TOO_MUCH),
        ("{{ '{:>1000000000}'.format(1) }}", MAKES_TOO_MUCH),
        ("{{ ('a' * 5000) | replace('a', 'bbbb') }}", MAKES_TOO_MUCH),
        ("{% for i in range(10000) %}{{ i }}{% endfor %}", MAKES_TOO_MUCH),
        # Three nested loops ran for over 120 s in `validate`; two took 11 s, and were sent.
        (
            "{% for i in range(9999) %}{% for j in range(9999) %}{% for k in range(9999) %}{% endfor %}{% endfor %}{% endfor %}",
            TAKES_TOO_LONG,
        ),
        (
            "{% for i in range(9999) %}{% for j in range(9999) %}{% endfor %}{% endfor %}",
            TAKES_TOO_LONG,
        ),
        # No loop: a macro calling itself twice, 2^40 calls.
        (
            "{% macro f(n) %}{% if n %}{{ f(n - 1) }}{{ f(n - 1) }}{% endif %}{% endmacro %}{{ f(40) }}",
            TAKES_TOO_LONG,
        ),
    ],
)
def test_a_template_that_would_make_gigabytes_or_work_for_minutes_is_refused_at_once(
    cli, write_job, template, refusal
):
    job = write_job(
        "version: 1\n" + PRO_DEFAULTS + f"requests:\n  - prompt: {json.dumps(template)}\n"
    )
    result = cli("validate", job)
    assert result.exit_code == 2, result.output
    assert "job.yaml:7:13: error: requests[0].prompt:" in result.stderr and refusal in result.stderr


def test_ordinary_templates_are_not_bounded_by_the_limit(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - prompt: \"{{ ('la ' * 3) | title }}{{ '%s-%02d' % ('shot', 7) }} {{ 2 ** 10 }}"
        + "{% for c in 'abc' %} {{ c }}{{ loop.length }}{% endfor %}\"\n"
    )
    assert [r.body["prompt"] for r in expand(job)] == ["La La La shot-07 1024 a3 b3 c3"]


def test_ids_that_become_one_file_name_are_refused_where_they_are_written(cli, write_job):
    csv_file = "prompt,id\nA fox,shot/1\nA hare,shot-1\nA deer,Shot 1\n"
    job = write_job(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - rows: {file: shots.csv}\n",
        files={"shots.csv": csv_file},
    )
    result = cli("validate", job)
    assert result.exit_code == 2, result.output
    assert (
        "shots.csv:3" in result.stderr
        and "ids 'shot-1' and 'shot/1' are one file name, shot-1.mp4" in result.stderr
    )
    assert "shots.csv:4" in result.stderr and "ids 'Shot 1' and 'shot/1'" in result.stderr


def test_each_repeat_of_a_named_row_gets_a_name_of_its_own(world, write_job):
    """A CSV with ids and `repeat: 2`: the first take keeps the id, the second is `-v1`; every
    paid video gets its own file, and a second download finds them all."""
    env = world(time_scale=0)
    job = write_job(
        "version: 1\nname: takes\n"
        + PRO_DEFAULTS
        + "requests:\n  - rows: {file: shots.csv}\n    repeat: 2\n",
        files={"shots.csv": "prompt,id\nA fox,fox\nA hare,hare\n"},
    )
    assert env.cli("validate", job).exit_code == 0
    assert [r.label for r in expand(load_job(job))] == ["fox", "fox-v1", "hare", "hare-v1"]
    assert env.cli("run", job, "--yes", "--rpm", "0", "--wait").exit_code == 0
    out = env.tmp / "videos"
    first = env.cli("download", "takes", "--out", out)
    assert first.exit_code == 0 and "4 downloaded" in first.output, first.output
    assert sorted(p.name for p in out.glob("*.mp4")) == [
        "fox-v1.mp4",
        "fox.mp4",
        "hare-v1.mp4",
        "hare.mp4",
    ]
    assert "4 already there" in env.cli("download", "takes", "--out", out).output


def test_download_never_gives_two_tasks_one_file_and_fetches_again_one_the_ledger_gave_two(
    world, write_job
):
    """Labels equal in the ledger (written before ids were checked as file names): each task
    gets its own file, and a file another task's row claims is not taken as this one's."""
    env = world(time_scale=0)
    job = write_job(
        "version: 1\nname: old\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: a fox, id: a}\n  - {prompt: a hare, id: b}\n"
    )
    assert env.cli("run", job, "--yes", "--rpm", "0", "--wait").exit_code == 0
    out = env.tmp / "videos"
    out.mkdir()
    with env.ledger() as ledger:  # as an older batchgen left it: both rows named and filed alike
        keys = [row["key"] for row in ledger.tasks.rows()]
        ledger.db.conn.execute("UPDATE job_tasks SET label = 'shot-1'")
        ledger.db.conn.execute(
            "UPDATE tasks SET files = ?", (json.dumps([str(out / "shot-1.mp4")]),)
        )
    (out / "shot-1.mp4").write_bytes(b"one of the two videos")
    result = env.cli("download", "old", "--out", out)
    assert result.exit_code == 0 and "2 downloaded" in result.output, result.output
    assert sorted(p.name for p in out.glob("shot-1_*.mp4")) == sorted(
        f"shot-1_{key[:8]}.mp4" for key in keys
    )
    recorded = [json.loads(r["files"]) for r in env.rows()]
    assert (
        sorted(len(set(paths)) for paths in recorded) == [1, 1]
        and len({p for paths in recorded for p in paths}) == 2
    )


def test_labels_are_stored_shown_and_name_the_downloaded_files(world, write_job):
    env = world(time_scale=0)
    job = write_job(LABELLED, files={"shots.csv": LABELLED_CSV})
    assert env.cli("run", job, "--yes", "--rpm", "0", "--wait").exit_code == 0
    listing = env.cli("tasks", "shots").stdout
    assert "cat-wan2.2-pro" in listing and "shot-13" in listing
    rows = [json.loads(line) for line in env.cli("tasks", "shots", "--json").stdout.splitlines()]
    assert {r["label"] for r in rows} == {
        "cat-wan2.2-pro",
        "cat-wan2.2-fast",
        "dog-wan2.2-pro",
        "dog-wan2.2-fast",
        "shot-12",
        "shot-13",
    }
    out = env.tmp / "videos"
    assert env.cli("download", "shots", "--out", out).exit_code == 0
    assert sorted(p.name for p in out.glob("*.mp4")) == sorted(f"{r['label']}.mp4" for r in rows)
    with open(out / "manifest.csv", newline="") as f:
        manifest = {row["id"]: row for row in csv.DictReader(f)}
    assert json.loads(manifest["shot-12"]["meta"]) == {"shot": "12"} and json.loads(
        manifest["dog-wan2.2-fast"]["meta"]
    ) == {"scene": 4}
    assert env.cli("gallery", "shots", "--out", out).exit_code == 0
    assert "shot-13" in (out / "index.html").read_text()


def test_a_label_is_not_part_of_the_identity(world, write_job):
    env = world()
    job = write_job("version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: a cat, id: first}\n")
    env.cli("run", job, "--yes", "--rpm", "0")
    write_job("version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: a cat, id: renamed}\n")
    assert "1 done" in env.cli("run", job, "--yes", "--rpm", "0").output
    assert len(env.sandbox.created()) == 1
    assert [
        json.loads(line)["label"] for line in env.cli("tasks", "job", "--json").stdout.splitlines()
    ] == ["renamed"]
