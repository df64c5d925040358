"""Reading YAML: the one-pass builder gives exactly what the full loader gives.

`yamldoc._build` reads a plain document straight from the parser's events; anything unusual
goes to the loader (`yamldoc._load`). These tests hold the two to the same data (types
included) and the same marks, and check which documents take which way.
"""

from __future__ import annotations

import math

import pytest
import yaml
from helpers import REPO
from hypothesis import given, settings
from hypothesis import strategies as st

from batchgen.errors import JobError
from batchgen.jobs import yamldoc


def same(a, b) -> bool:
    """Equal data, with types (True is not 1, 1 is not 1.0) and NaN equal to NaN."""
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def both_ways(text: str):
    built = yamldoc._build(text)
    assert built is not None, "this document should take the one-pass way"
    problems: list = []
    loaded = yamldoc._load(text, "f.yaml", problems)
    assert problems == []
    return built, loaded


def assert_same_reading(text: str) -> None:
    (data, marks, nodes), (data2, marks2, nodes2) = both_ways(text)
    assert same(data, data2), (data, data2)
    assert marks.values == marks2.values
    assert marks.keys == marks2.keys
    assert nodes == nodes2


PLAIN_SCALARS = """\
ratio: 16:9
yes_is_text: yes
on: off
octal: 0o17
leading_zero: 017
hex: 0x1F
negative: -12
plus: +3
float: 1.5
exp: 1e3
inf: .inf
neg_inf: -.Inf
nan: .NaN
tilde: ~
empty:
null_word: Null
true_word: TRUE
false_word: false
underscored: 1_000
quoted_int: "5"
single: 'true'
unicode: "caf\\u00e9 ☕"
1: an integer key
false: a boolean key
~: a null key
2.5: a float key
block: |
  two
  lines
folded: >
  folded
  text
flow: {a: 1, b: [x, "y", 3.0]}
nested:
  - [1, [2, [3]]]
  - {deep: {deeper: [~, '', ""]}}
"""


def test_every_core_schema_scalar_reads_the_same_both_ways():
    assert_same_reading(PLAIN_SCALARS)
    data = yamldoc._build(PLAIN_SCALARS)[0]
    assert data["ratio"] == "16:9" and data["yes_is_text"] == "yes" and data["on"] == "off"
    assert data["octal"] == 15 and data["leading_zero"] == 17 and data["hex"] == 31
    assert data["inf"] == math.inf and data["neg_inf"] == -math.inf and math.isnan(data["nan"])
    assert data["underscored"] == "1_000" and data["quoted_int"] == "5" and data["single"] == "true"
    assert data[1] and data[False] and data[None] and data[2.5]


def test_the_shipped_and_broken_job_files_read_the_same_both_ways():
    files = [
        *sorted((REPO / "jobs").glob("*.yaml")),
        *sorted((REPO / "tests" / "broken").glob("*.yaml")),
    ]
    fast = 0
    for path in files:
        text = path.read_text(errors="replace")
        try:
            if yamldoc._build(text) is None:
                continue
        except yaml.YAMLError:
            continue  # not YAML at all: the loader's own error, tested in test_broken_jobs
        assert_same_reading(text)
        fast += 1
    assert fast >= 25  # most job files, broken or not, are plain documents


@pytest.mark.parametrize(
    "text",
    [
        "a: &x [1]\nb: *x\n",  # an alias
        "a: !!str 5\n",  # an explicit tag
        "a: !!python/object:os.system x\n",  # a refused tag: the loader's message
        "base: {x: 1}\nother:\n  <<: {y: 2}\n",  # a merge key
        "a: 1\na: 2\n",  # a key given twice
        "? [1, 2]\n: a list as key\n",  # a key that is not a scalar
        "n: 1234567890123456789012\n",  # an integer past the bound
        "a: 1\n---\nb: 2\n",  # two documents
        "",  # nothing
        "# only a comment\n",
    ],
)
def test_unusual_documents_go_to_the_full_loader(text):
    assert yamldoc._build(text) is None


def test_unusual_documents_keep_the_loaders_messages():
    with pytest.raises(JobError) as twice:
        yamldoc.parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert twice.value.problems[0].line == 3 and "given twice" in twice.value.problems[0].message
    with pytest.raises(JobError) as big:
        yamldoc.parse_yaml("n: 1234567890123456789012\n", "f.yaml")
    assert "22 digits is too large" in big.value.problems[0].message
    data, _ = yamldoc.parse_yaml("a: &x [1]\nb: *x\n", "f.yaml")
    assert data == {"a": [1], "b": [1]}


def test_the_bounds_hold_on_the_one_pass_way_too():
    deep = "a: " + "[" * (yamldoc.MAX_DEPTH + 1) + "]" * (yamldoc.MAX_DEPTH + 1) + "\n"
    with pytest.raises(JobError) as e:
        yamldoc.parse_yaml(deep, "f.yaml")
    assert f"nested deeper than {yamldoc.MAX_DEPTH} levels" in e.value.problems[0].message
    assert e.value.problems[0].line == 1


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**15), 10**15),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(
        [
            "16:9",
            "yes",
            "no",
            "on",
            "0o17",
            "017",
            "0x1f",
            "1_000",
            "~",
            "null",
            "True",
            ".inf",
            "-",
            "<<x",
            "a: b",
            "#",
        ]
    ),
)
DATA = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.integers(-9, 9), st.booleans()), inner, max_size=4
        ),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(
    data=DATA,
    flow=st.sampled_from([None, True, False]),
    style=st.sampled_from([None, '"', "'"]),
    width=st.sampled_from([20, 80]),
)
def test_any_document_reads_the_same_both_ways(data, flow, style, width):
    text = yaml.safe_dump(
        {"root": data},
        default_flow_style=flow,
        default_style=style,
        allow_unicode=True,
        width=width,
    )
    built = yamldoc._build(text)
    if (
        built is None
    ):  # a surrogate or a huge integer the dumper wrote: the loader's way is the only way
        return
    assert_same_reading(text)
