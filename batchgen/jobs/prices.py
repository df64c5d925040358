"""Prices: what a request costs, in credits, from the user's rules or from what batchgen learned.

The provider publishes no prices, so batchgen never assumes one. Prices come from rules in the
job file (`prices:`) or in a file given with `--prices` (same format), and from the balance:
a run whose submissions were all of one class, alone on the account, learns that class's price
from the drop (see `learn_price`). Declared prices win over learned ones.

A rule matches a request like an `exclude` item: every field it names has that value (a model
by name or id). The most specific matching rule (the most fields named) wins; two matching
rules equally specific that disagree are an error, located at both.

A request's *class* is what can plausibly change its price: the model, the options but
`prompt_optimization`, and the number of images. Learned prices are per class.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..errors import JobError, PriceTie, Problem
from . import models, schemas
from .job import Job
from .job_files import read_text_file
from .yamldoc import FieldPath, Marks, parse_yaml


@dataclass(frozen=True)
class PriceRule:
    fields: tuple[tuple[tuple[str, ...], Any], ...]  # (field path, value), the model as its id
    credits: int
    file: str
    line: int | None
    column: int | None
    path: str  # `prices[2]`

    @property
    def specificity(self) -> int:
        return len(self.fields)

    @property
    def reads_only_the_class(self) -> bool:
        """Whether the rule names only fields a request's class holds (see `class_tuple`)."""
        return all(
            path == ("model_id",) or (path[0] == "options" and path[-1] != "prompt_optimization")
            for path, _ in self.fields
        )

    def matches(self, body: dict[str, Any]) -> bool:
        return all(_value(body, path) == value for path, value in self.fields)

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def describe(self) -> str:
        parts = []
        for path, value in self.fields:
            shown = (
                models.label(value)
                if path == ("model_id",)
                else json.dumps(value, ensure_ascii=False).strip('"')
            )
            parts.append(f"{'.'.join(path).replace('model_id', 'model')}={shown}")
        return ", ".join(parts) or "every request"


@dataclass(frozen=True)
class Price:
    credits: int
    source: str  # "declared at jobs/x.yaml:12" or "learned from run 7"


def _value(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = body
    for part in path:
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _rule_fields(raw: dict[str, Any]) -> tuple[tuple[tuple[str, ...], Any], ...]:
    """A rule's fields as body paths: `model` → model_id (by id), `options: {...}` → its keys,
    one image URL → a one-item list (as an exclude item compares them)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, value in raw.items():
        if name == "credits":
            continue
        if name == "model":
            out.append((("model_id",), models.model_id(value)))
        elif name == "options" and isinstance(value, dict):
            out.extend((("options", k), v) for k, v in value.items())
        elif name == "image_urls" and isinstance(value, str):
            out.append((("image_urls",), [value]))
        else:
            out.append((tuple(name.split(".")), value))
    return tuple(out)


def rules_from(data: Any, marks: Marks, file: str, prefix: FieldPath = ()) -> list[PriceRule]:
    """The rules of a `prices:` list already checked against the schema."""
    rules = []
    for index, raw in enumerate(data or []):
        path = (*prefix, "prices", index)
        mark = marks.at(path)
        line, column = mark if mark else (None, None)
        rules.append(
            PriceRule(
                _rule_fields(raw), int(raw["credits"]), file, line, column, f"prices[{index}]"
            )
        )
    return rules


def job_rules(job: Job) -> list[PriceRule]:
    return rules_from(job.data.get("prices"), job.marks, job.file)


def load_rules(path: str) -> list[PriceRule]:
    """The rules of a `--prices FILE`: a YAML mapping with one key, `prices`, as in a job file."""
    text = read_text_file(path)
    data, marks = parse_yaml(text, path)
    validator = schemas.validator("job", "/$defs/price_file")
    problems = []
    for error in validator.iter_errors(data):
        for leaf in schemas.leaf_errors(error):
            mark = marks.at(tuple(leaf.absolute_path))
            line, column = mark if mark else (None, None)
            message, hint = schemas.describe(leaf)
            unexpected = schemas.unexpected_keys(leaf)
            if unexpected:
                message, hint = (
                    f"unknown field '{unexpected[0]}'",
                    schemas.suggest(unexpected[0], schemas.allowed_keys(leaf)),
                )
            problems.append(
                Problem(path, line, column, ".".join(map(str, leaf.absolute_path)), message, hint)
            )
    if problems:
        raise JobError(problems)
    return rules_from(data["prices"], marks, path)


def class_tuple(body: dict[str, Any]) -> tuple[Any, ...]:
    """A request's class as a cheap hashable value: (model_id, options but prompt_optimization
    as sorted pairs, number of images). `class_key` spells it as JSON for the ledger."""
    options = body.get("options")
    items = (
        tuple(sorted((k, v) for k, v in options.items() if k != "prompt_optimization"))
        if isinstance(options, dict)
        else ()
    )
    return (body.get("model_id"), items, len(body.get("image_urls") or ()))


def key_of_tuple(cls: tuple[Any, ...]) -> str:
    model_id, items, images = cls
    return json.dumps(
        {"model_id": model_id, "options": dict(items), "images": images},
        sort_keys=True,
        separators=(",", ":"),
    )


def class_key(body: dict[str, Any]) -> str:
    """A request's class as JSON (how the `prices` table and messages name it)."""
    cls = class_tuple(body)
    try:
        return _remembered_key(cls)
    except TypeError:  # an option value that cannot be hashed (a list): spelled afresh
        return key_of_tuple(cls)


# A run names the class of every request it submits, of which there are a few: each spelled once.
_remembered_key = functools.lru_cache(maxsize=1024)(key_of_tuple)


def describe_class(key: str) -> str:
    """`wan2.2-pro 480p 5 s 16:9` for a class key."""
    cls = json.loads(key)
    options = cls.get("options") or {}
    parts = [models.label(str(cls.get("model_id")))]
    parts += [_option_words(k, v) for k, v in sorted(options.items())]
    if cls.get("images"):
        parts.append(f"{cls['images']} image{'s' if cls['images'] > 1 else ''}")
    return " ".join(parts)


def _option_words(name: str, value: object) -> str:
    if name == "duration":
        return f"{value} s"
    if name == "num_outputs":
        return f"{value} video{'' if value == 1 else 's'}"
    if isinstance(value, bool):
        return f"{name} {'on' if value else 'off'}"
    return str(value)


def tie_problem(tie: PriceTie, origin: str | None = None) -> Problem:
    """A PriceTie said as a Problem, at the first rule."""
    a, b = tie.first, tie.second
    return Problem(
        a.file,
        a.line,
        a.column,
        a.path,
        f"{a.path} ({a.credits} credits) and {b.path} at {b.where()} ({b.credits} credits) both match a request, equally specific",
        hint="make one of them name more fields, or make them agree",
        origin=origin,
    )


class PriceBook:
    """Every known price: the declared rules, then the learned prices by class."""

    def __init__(
        self,
        rules: Iterable[PriceRule] = (),
        learned: dict[str, tuple[int, int | None]] | None = None,
    ):
        self.rules = sorted(rules, key=lambda r: -r.specificity)
        self.learned = learned or {}  # class key → (credits, run id)
        self._memo: dict[tuple[Any, ...], Price | None] = {}
        # A rule naming a prompt, an image URL or prompt_optimization makes a price depend on
        # more than the class: then prices are not remembered per class.
        self._by_class = all(rule.reads_only_the_class for rule in self.rules)

    def price(self, body: dict[str, Any]) -> Price | None:
        """The price of `body`, or None when nothing declares or taught it. Raises PriceTie."""
        if not self.rules and not self.learned:
            return None
        try:
            key = class_tuple(body) if self._by_class else None
            if key is not None and key in self._memo:
                return self._memo[key]
        except TypeError:  # an unhashable option value: no shortcut
            key = None
        found = self._declared(body)
        if found is None and self.learned:
            learned = self.learned.get(class_key(body))
            found = Price(learned[0], f"learned from run {learned[1]}") if learned else None
        if key is not None:
            self._memo[key] = found
        return found

    def _declared(self, body: dict[str, Any]) -> Price | None:
        best: PriceRule | None = None
        for rule in self.rules:
            if best is not None and rule.specificity < best.specificity:
                break
            if rule.matches(body):
                if best is None:
                    best = rule
                elif rule.credits != best.credits:
                    raise PriceTie(best, rule)
        return Price(best.credits, f"declared at {best.where()} ({best.path})") if best else None

    @property
    def empty(self) -> bool:
        """No rule declared, nothing learned: no request has a known price."""
        return not self.rules and not self.learned

    def credits(self, body: dict[str, Any]) -> int | None:
        price = self.price(body)
        return price.credits if price else None

    def credits_for_cap(self, body: dict[str, Any]) -> int | None:
        """What a spend cap counts for `body`: the higher of its declared and learned prices.
        A typed-in price the balance contradicts must not let a cap be passed."""
        price = self.credits(body)
        learned = self.learned.get(class_key(body)) if self.learned else None
        if learned is not None and (price is None or learned[0] > price):
            return learned[0]
        return price

    @property
    def may_contradict(self) -> bool:
        """Whether any request can have a declared and a learned price (then `contradiction`
        is worth asking)."""
        return bool(self.rules and self.learned)

    def contradiction(self, body: dict[str, Any]) -> str | None:
        """A sentence when `body`'s declared price and the price the balance taught differ."""
        learned = self.learned.get(class_key(body)) if self.learned else None
        if learned is None or not self.rules:
            return None
        declared = self._declared(body)
        if declared is None or declared.credits == learned[0]:
            return None
        return (
            f"{describe_class(class_key(body))}: {declared.credits:,} credits {declared.source}, but the balance "
            f"showed {learned[0]:,} (learned from run {learned[1]}); a cap counts {max(declared.credits, learned[0]):,}"
        )


NO_PRICES = PriceBook()
