"""ValidatedJob, rule by rule: each test is an example of the job file format (README, "A job file")."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from helpers import PRO_DEFAULTS
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.jobs.expand import expand, identity
from batchgen.jobs.validate import check

PRO_OPTIONS = {
    "prompt_optimization": True,
    "aspect_ratio": "16:9",
    "resolution": "480p",
    "duration": 5,
}


def bodies(job):
    return [r.body for r in check(job).requests()]


def test_a_single_request_takes_everything_from_defaults(load):
    job = load("version: 1\n" + PRO_DEFAULTS + "requests:\n  - prompt: A cat\n")
    assert bodies(job) == [{"prompt": "A cat", "model_id": "2-9", "options": PRO_OPTIONS}]


def test_model_names_and_ids_both_become_model_id(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - {prompt: a, model: wan2.2-fast}\n  - {prompt: b, model: '2-10'}\n"
    )
    assert [b["model_id"] for b in bodies(job)] == ["2-10", "2-10"]


def test_entry_fields_deep_merge_over_defaults(load):
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: A cat, options: {duration: 8}}\n"
    )
    assert bodies(job)[0]["options"] == {**PRO_OPTIONS, "duration": 8}


def test_null_deletes_an_inherited_value(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + """requests:
  - model: wan2.2-lite
    prompt: The cat turns
    image_urls: https://example.com/cat.jpg
    options: {resolution: 720p, duration: null}
"""
    )
    (body,) = bodies(job)
    assert "duration" not in body["options"]
    assert body["image_urls"] == ["https://example.com/cat.jpg"]  # one string: a one-item list


def test_matrix_is_the_cartesian_product_of_its_axes(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + """requests:
  - matrix:
      prompt: [a, b]
      model: [wan2.2-pro, wan2.2-fast]
      options.duration: [5, 8]
"""
    )
    got = {(b["prompt"], b["model_id"], b["options"]["duration"]) for b in bodies(job)}
    assert got == {(p, m, d) for p in "ab" for m in ("2-9", "2-10") for d in (5, 8)}


def test_an_options_axis_takes_objects_merged_key_by_key(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + """requests:
  - matrix:
      options: [{duration: 8}, {aspect_ratio: "9:16", resolution: 720p}]
    prompt: A cat
"""
    )
    assert [b["options"] for b in bodies(job)] == [
        {**PRO_OPTIONS, "duration": 8},
        {**PRO_OPTIONS, "aspect_ratio": "9:16", "resolution": "720p"},
    ]


def test_exclude_drops_combinations_matching_every_key_given(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + """requests:
  - matrix:
      model: [wan2.2-pro, wan2.2-fast]
      options.duration: [5, 8]
    exclude: [{model: "2-10", options.duration: 8}]   # an id matches the name in the axis
    prompt: A cat
"""
    )
    got = {(b["model_id"], b["options"]["duration"]) for b in bodies(job)}
    assert got == {("2-9", 5), ("2-9", 8), ("2-10", 5)}


def test_include_adds_a_combination_over_the_fixed_fields(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + """requests:
  - matrix: {prompt: [a]}
    include: [{prompt: b, model: wan2.2-fast, options.duration: 8}]
    options: {aspect_ratio: "9:16"}
"""
    )
    assert bodies(job)[1] == {
        "prompt": "b",
        "model_id": "2-10",
        "options": {**PRO_OPTIONS, "aspect_ratio": "9:16", "duration": 8},
    }


def test_precedence_defaults_then_fixed_then_combination_then_include(load):
    job = load(
        """
version: 1
defaults:
  model: wan2.2-pro
  options: {prompt_optimization: true, aspect_ratio: "16:9", resolution: 480p, duration: 5}
requests:
  - matrix: {options.resolution: [720p]}
    include: [{options.duration: 8, options.resolution: 480p}]
    options: {resolution: 480p, aspect_ratio: "9:16"}
    prompt: p
"""
    )
    combo, extra = bodies(job)
    assert combo["options"] == {**PRO_OPTIONS, "aspect_ratio": "9:16", "resolution": "720p"}
    assert extra["options"] == {**PRO_OPTIONS, "aspect_ratio": "9:16", "duration": 8}


def test_prompts_file_gives_one_prompt_per_meaningful_line(load):
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - matrix: {prompt: {file: prompts/p.txt}}\n",
        files={
            "prompts/p.txt": "# a comment\n\n  first prompt  \nsecond prompt\n   # indented comment\n"
        },
    )
    assert [b["prompt"] for b in bodies(job)] == ["first prompt", "second prompt"]


def test_a_prompts_file_ends_lines_where_python_does_and_keeps_any_text(load):
    # Held compactly (UTF-8 end to end), a prompt comes back as written: accents, emoji, and
    # lines ended by \r\n, \r or U+2028 as str.splitlines ends them, numbered so.
    text = "caf\u00e9 at dawn\r\na fox \U0001f98a\rsnow\u2028  last one  \n"
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - matrix: {prompt: {file: p.txt}}\n",
        files={"p.txt": text},
    )
    assert [b["prompt"] for b in bodies(job)] == [
        "caf\u00e9 at dawn",
        "a fox \U0001f98a",
        "snow",
        "last one",
    ]
    (prompts,) = job.prompt_files.values()
    assert list(prompts.lines) == [1, 2, 3, 4]
    assert prompts.prompts[-1] == "last one" and prompts.prompts[1:3] == [
        "a fox \U0001f98a",
        "snow",
    ]
    for outside in (4, -5):  # as a list of them would
        with pytest.raises(IndexError):
            prompts.prompts[outside]


def test_rows_are_typed_by_the_schema_and_empty_cells_inherit(load):
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - rows: {file: shots.csv}\n",
        files={
            "shots.csv": "prompt,options.duration,options.prompt_optimization,image_urls,model\n"
            "one,8,false,https://e.com/a.jpg https://e.com/b.jpg,\n"
            "two,,,,wan2.2-fast\n"
        },
    )
    one, two = bodies(job)
    assert one["options"]["duration"] == 8 and one["options"]["prompt_optimization"] is False
    assert one["image_urls"] == ["https://e.com/a.jpg", "https://e.com/b.jpg"]
    assert two["options"] == PRO_OPTIONS and two["model_id"] == "2-10"


def test_a_null_cell_deletes_the_inherited_value(load):
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - rows: {file: lite.csv}\n",
        files={
            "lite.csv": "prompt,model,options.duration,options.resolution,image_urls\nturn,wan2.2-lite,null,720p,https://e.com/a.jpg\n"
        },
    )
    assert "duration" not in bodies(job)[0]["options"]


def test_repeat_asks_for_variants_and_the_variant_is_part_of_the_key(load):
    job = load(
        "version: 1\nrepeat: 2\n"
        + PRO_DEFAULTS
        + "requests:\n  - prompt: a\n  - {prompt: b, repeat: 3}\n"
    )
    requests = list(check(job).requests())
    assert [(r.body["prompt"], r.variant) for r in requests] == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
        ("b", 1),
        ("b", 2),
    ]
    assert len({r.key for r in requests}) == 5


def test_raising_repeat_keeps_the_keys_of_the_existing_variants(load):
    two = load("version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: a, repeat: 2}\n")
    three = load("version: 1\n" + PRO_DEFAULTS + "requests:\n  - {prompt: a, repeat: 3}\n")
    old = {r.key for r in check(two).requests()}
    new = {r.key for r in check(three).requests()}
    assert old < new and len(new - old) == 1


def test_identical_requests_are_one_request_and_a_warning(load):
    job = load(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - prompt: a\n  - matrix: {prompt: [a, b]}\n"
    )
    expansion = check(job)
    assert [r.body["prompt"] for r in expansion.requests()] == ["a", "b"]
    (warning,) = expansion.warnings
    assert warning.severity == "warning" and "same request as requests[0]" in warning.message
    assert warning.line == 8


def test_duplicates_are_counted_by_the_entry_that_asked_first(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n"
        + "  - matrix: {prompt: [a, b, a]}\n"  # a again: this entry asked first
        + "  - matrix: {prompt: [b, c, a]}\n"  # b and a: requests[0] asked first
    )
    expansion = check(job)
    assert [r.body["prompt"] for r in expansion.requests()] == ["a", "b", "c"]
    within, across = expansion.warnings
    assert "same request as an earlier request of this entry" in within.message
    assert within.count == 1
    assert "same request as requests[0]" in across.message and across.count == 2


def test_an_exclude_that_matches_nothing_is_a_warning(load):
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - matrix: {prompt: [a]}\n    exclude: [{prompt: z}]\n"
    )
    (warning,) = check(job).warnings
    assert "matches no combination" in warning.message


def test_the_key_is_sha256_of_the_canonical_json_of_api_body_and_variant():
    body = {"prompt": "Un chat élégant", "model_id": "2-9", "options": {"duration": 5}}
    canonical = '{"api":"https://api.pixwith.ai","body":{"model_id":"2-9","options":{"duration":5},"prompt":"Un chat élégant"},"variant":1}'
    assert (
        identity("https://api.pixwith.ai/", body, 1)
        == hashlib.sha256(canonical.encode()).hexdigest()
    )


def test_the_job_name_is_not_part_of_the_key_but_the_api_base_is(load):
    a = load("version: 1\nname: one\n" + PRO_DEFAULTS + "requests:\n  - prompt: a\n")
    b = load("version: 1\nname: two\n" + PRO_DEFAULTS + "requests:\n  - prompt: a\n")
    assert [r.key for r in expand(a)] == [r.key for r in expand(b)]
    assert [r.key for r in expand(a)] != [r.key for r in expand(a, "http://127.0.0.1:8787")]


def test_the_default_name_is_the_file_stem(write_job):
    from batchgen.jobs.spec import load_job

    path = write_job(
        "version: 1\n" + PRO_DEFAULTS + "requests:\n  - prompt: a\n", name="cat shots (v2).yaml"
    )
    assert load_job(path).name == "cat shots -v2"


def test_the_size_guard_counts_before_building_anything(load):
    from batchgen.errors import JobError

    axis = "[" + ", ".join(f"p{i}" for i in range(1000)) + "]"
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + f"requests:\n  - matrix: {{prompt: {axis}, options.duration: [5, 8]}}\n    repeat: 1000\n"
    )
    with pytest.raises(JobError, match="expands to 2,000,000 requests"):
        check(job)


# -- properties -----------------------------------------------------------------------------------

# Not starting with a digit: PyYAML writes `08` unquoted (not an int to YAML 1.1), and a job
# file is read as YAML 1.2 reads it, where it is the number 8.
words = (
    st.text(alphabet=st.characters(categories=["L", "N", "Zs"]), min_size=1, max_size=12)
    .map(str.strip)
    .filter(lambda w: w and not w[0].isdigit())
)
option_values = st.fixed_dictionaries(
    {},
    optional={
        "aspect_ratio": st.sampled_from(["16:9", "9:16"]),
        "resolution": st.sampled_from(["480p", "720p"]),
        "duration": st.sampled_from([5, 8]),
        "prompt_optimization": st.booleans(),
    },
)


@st.composite
def jobs(draw):
    axes = {"prompt": draw(st.lists(words, min_size=1, max_size=3, unique=True))}
    if draw(st.booleans()):
        axes["model"] = draw(
            st.lists(
                st.sampled_from(["wan2.2-pro", "wan2.2-fast", "2-9"]),
                min_size=1,
                max_size=2,
                unique=True,
            )
        )
    if draw(st.booleans()):
        axes["options.duration"] = [5, 8]
    entries = [
        {"matrix": axes, "options": draw(option_values)},
        {"prompt": draw(words), "repeat": draw(st.integers(1, 3))},
    ]
    return {
        "version": 1,
        "defaults": {"model": "wan2.2-pro", "options": {**PRO_OPTIONS, **draw(option_values)}},
        "requests": entries,
    }


def _reorder(value, rng):
    """The same data with every mapping's keys in another order."""
    if isinstance(value, dict):
        items = list(value.items())
        rng.shuffle(items)
        return {k: _reorder(v, rng) for k, v in items}
    if isinstance(value, list):
        return [_reorder(v, rng) for v in value]
    return value


@settings(max_examples=60, deadline=None)
@given(data=jobs(), seed=st.randoms(use_true_random=False))
def test_expansion_is_deterministic_and_independent_of_key_order(tmp_path_factory, data, seed):
    from batchgen.jobs.spec import load_job

    folder = tmp_path_factory.mktemp("job")
    first, second = folder / "a.yaml", folder / "b.yaml"
    first.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    second.write_text(yaml.safe_dump(_reorder(data, seed), sort_keys=False), encoding="utf-8")

    def keys(path):
        return [(r.key, r.variant) for r in check(load_job(path)).requests()]

    once = keys(first)
    assert once == keys(first)  # deterministic
    assert sorted(once) == sorted(
        keys(second)
    )  # the same requests whatever order keys are written in
    for key, _ in once:
        assert len(key) == 64 and set(key) <= set("0123456789abcdef")


def test_plain_scalars_are_read_as_yaml_1_2_reads_them(load):
    # As editors, check-jsonschema and the published schema see the file: `16:9` is text (YAML
    # 1.1 read it as 969, base 60), `yes`/`on` are text, `0o17` is octal and `017` decimal.
    job = load(
        "version: 1\nlimits: {rpm: 0o17, concurrency: 017}\ndefaults:\n  model: wan2.2-pro\n"
        "  options: {prompt_optimization: true, aspect_ratio: 16:9, resolution: 480p, duration: 5}\n"
        "requests:\n  - prompt: yes\n  - prompt: on\n"
    )
    assert job.data["defaults"]["options"]["aspect_ratio"] == "16:9"
    assert [entry["prompt"] for entry in job.entries] == ["yes", "on"]
    assert job.limits == {"rpm": 15, "concurrency": 17}


# -- the fast path for a long prompt axis ---------------------------------------------------------

# Prompts as a prompts file may hold them: any text, quotes, backslashes, control characters,
# characters outside the BMP, and now and then a template (which the fast path leaves alone).
prompt_texts = st.text(min_size=1, max_size=20).filter(
    lambda t: t.strip() and "\n" not in t and "\r" not in t
)


@st.composite
def prompt_matrices(draw):
    axes = {}
    prompts = draw(st.lists(prompt_texts, min_size=1, max_size=4, unique=True))
    if draw(st.integers(0, 5)) == 0:  # a template: the general path's to render
        prompts.append("{{ x }} cat")
    others = {
        "model": st.lists(
            st.sampled_from(["wan2.2-pro", "wan2.2-fast", "2-9"]),
            min_size=1,
            max_size=2,
            unique=True,
        ),
        "options.duration": st.just([5, 8]),
        "options": st.lists(option_values, min_size=1, max_size=2),
        "image_urls": st.lists(
            st.sampled_from(["https://e.com/a.png", "https://e.com/b.png"]),
            min_size=1,
            max_size=2,
            unique=True,
        ),
    }
    chosen = draw(st.lists(st.sampled_from(sorted(others)), unique=True, max_size=3))
    if draw(st.integers(0, 5)) == 0:  # a var: the general path's too
        others["vars.x"] = st.just(["a", "b"])
        chosen.append("vars.x")
    order = draw(st.permutations(["prompt", *chosen]))
    for name in order:
        axes[name] = prompts if name == "prompt" else draw(others[name])
    entry = {"matrix": axes, "options": draw(option_values)}
    if draw(st.booleans()):
        entry["include"] = [{"prompt": draw(prompt_texts), "options": {"duration": 8}}]
    if draw(st.booleans()):
        entry["repeat"] = draw(st.integers(1, 3))
    defaults = {"model": "wan2.2-pro", "options": {**PRO_OPTIONS, **draw(option_values)}}
    if draw(st.booleans()):
        defaults["prompt"] = "a default prompt"
    return {"version": 1, "defaults": defaults, "requests": [entry]}


@settings(max_examples=150, deadline=None)
@given(
    data=prompt_matrices(),
    api=st.sampled_from(["https://api.pixwith.ai", "http://127.0.0.1:8765/"]),
)
def test_the_fast_path_makes_exactly_the_requests_the_general_one_makes(
    tmp_path_factory, monkeypatch_session, data, api
):
    """Keys above all: a key that differed would send a request a second time."""
    import batchgen.jobs.expand as expand_mod
    from batchgen.errors import JobError
    from batchgen.jobs.spec import load_job

    path = tmp_path_factory.mktemp("job") / "job.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
    try:
        job = load_job(path)
    except JobError:
        return
    fast = [(r._replace(shape=None), merged) for r, merged in expand_mod.sourced(job, api)]
    with monkeypatch_session.context() as m:
        m.setattr(expand_mod, "_prompt_axis", lambda job, index: None)
        general = list(expand_mod.sourced(job, api))
    assert fast == general
    assert [r.key for r, _ in fast] == [identity(api, r.body, r.variant) for r, _ in fast]


@pytest.fixture(scope="session")
def monkeypatch_session():
    with pytest.MonkeyPatch.context() as m:
        yield m


def test_a_prompts_file_matrix_takes_the_fast_path(load):
    from batchgen.jobs.expand import _prompt_axis

    files = {"prompts.txt": "a cat\na dog\n"}
    job = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - matrix: {options.duration: [5, 8], prompt: {file: prompts.txt}}\n",
        files,
    )
    assert _prompt_axis(job, 0) == 1
    requests = list(expand(job))
    assert [r.body["prompt"] for r in requests] == ["a cat", "a dog", "a cat", "a dog"]
    assert all(r.shape is not None for r in requests)
    templated = load(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - {vars: {x: 1}, matrix: {prompt: ['{{ x }}', b]}}\n"
    )
    assert _prompt_axis(templated, 0) is None


# -- a CSV cell that says null --------------------------------------------------------------------


def test_a_null_csv_cell_deletes_in_every_column(cli, write_job):
    job = write_job(
        "version: 1\ndefaults:\n  model: wan2.2-pro\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - rows: {file: shots.csv}\n",
        files={
            "shots.csv": "prompt,model,options.aspect_ratio\nA cat,null,9:16\nA dog,wan2.2-fast,null\nnull,2-9,16:9\n"
        },
    )
    result = cli("validate", job)
    assert result.exit_code == 2
    assert "missing model" in result.stderr and "missing options.aspect_ratio" in result.stderr
    assert '"null" is not one of' not in result.stderr  # not the text "null"
    ok = write_job(
        "version: 1\ndefaults:\n  model: wan2.2-pro\n  image_urls: https://e.com/a.jpg\n"
        "  options: {prompt_optimization: true, aspect_ratio: '16:9', resolution: 480p, duration: 5}\n"
        "requests:\n  - rows: {file: ok.csv}\n",
        name="ok.yaml",
        files={"ok.csv": "prompt,image_urls\nnull,null\n"},
    )
    body = json.loads(cli("plan", ok, "--json").stdout)["requests"][0]["body"]
    assert body["prompt"] == "null" and "image_urls" not in body  # a prompt may be the word null
