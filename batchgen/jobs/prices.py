"""Prices: what a request costs, in the provider's unit, from the user's rules or from what
batchgen learned.

batchgen never assumes a price. Prices come from rules in the
job file (`prices:`) or in a file given with `--prices` (same format), and from the balance:
a run whose submissions were all of one class, alone on the account, learns that class's price
from the drop (see `learn_price`). Declared prices win over learned ones.

A rule matches a request like an `exclude` item: every field it names has that value (a model
by name or id). The most specific matching rule (the most fields named) wins; two matching
rules equally specific that disagree are an error, located at both.

A request's *class* is what can plausibly change its price, as its provider's catalogue says
(`price_class`: for most, the model, the options that cost, and the number of images).
Learned prices are per class.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Any, cast

from .. import providers
from ..errors import JobError, PriceTie, Problem
from ..providers import Catalogue, Fields
from . import schemas
from .expand import model_name, model_of
from .job import Job
from .job_files import read_text_file
from .yamldoc import FieldPath, Marks, parse_yaml


@dataclass(frozen=True)
class PriceRule:
    # (job-file field path, value): `model` by its name or id as written, one image URL as
    # a one-item list (as an exclude item compares them).
    fields: tuple[tuple[tuple[str, ...], Any], ...]
    credits: int
    file: str
    line: int | None
    column: int | None
    path: str  # `prices[2]`

    @property
    def specificity(self) -> int:
        return len(self.fields)

    def reads_only_the_class(self, catalogue: Catalogue) -> bool:
        """Whether the rule names only fields a request's class holds (see `price_class`)."""
        return all(catalogue.priced(path) for path, _ in self.fields)

    def matches(self, fields: Fields, catalogue: Catalogue) -> bool:
        return all(
            _value(fields, path) == _wanted(path, value, catalogue) for path, value in self.fields
        )

    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def describe(self, catalogue: Catalogue | None = None) -> str:
        parts = []
        for path, value in self.fields:
            shown = (
                model_name(catalogue, model_of(catalogue, value))
                if path == ("model",) and catalogue is not None
                else json.dumps(value, ensure_ascii=False).strip('"')
            )
            parts.append(f"{'.'.join(path)}={shown}")
        return ", ".join(parts) or "every request"


@dataclass(frozen=True)
class Price:
    credits: int
    source: str  # "declared at jobs/x.yaml:12" or "learned from run 7"


def _value(fields: Fields, path: tuple[str, ...]) -> Any:
    """What a request has at a job-file field path."""
    head = path[0]
    if head == "prompt":
        return fields.prompt
    if head == "model":
        return fields.model
    if head == "images":
        return list(fields.images)
    if head == "options" and len(path) == 2:
        return fields.options.get(path[1])
    return None


def _wanted(path: tuple[str, ...], value: Any, catalogue: Catalogue) -> Any:
    """A rule's value as a request holds it: a model by the provider's id."""
    return model_of(catalogue, value) if path == ("model",) else value


def _rule_fields(raw: dict[str, Any]) -> tuple[tuple[tuple[str, ...], Any], ...]:
    """A rule's fields as job-file paths: `options: {...}` → its keys, one image URL → a
    one-item list (as an exclude item compares them)."""
    out: list[tuple[tuple[str, ...], Any]] = []
    for name, value in raw.items():
        if name == "credits":
            continue
        if name == "options" and isinstance(value, dict):
            out.extend((("options", k), v) for k, v in value.items())
        elif name == "images" and isinstance(value, str):
            out.append((("images",), [value]))
        else:
            out.append((tuple(name.split(".")), value))
    return tuple(out)


def rules_from(
    data: Any, marks: Marks, file: str, prefix: FieldPath = (), catalogue: Catalogue | None = None
) -> list[PriceRule]:
    """The rules of a `prices:` list already checked against the schema; a model the
    provider's catalogue does not have is refused (the rule would never match)."""
    rules = []
    unknown = []
    for index, raw in enumerate(data or []):
        path = (*prefix, "prices", index)
        mark = marks.at(path)
        line, column = mark if mark else (None, None)
        model = raw.get("model")
        if catalogue is not None and isinstance(model, str) and catalogue.lookup(model) is None:
            at = marks.at((*path, "model")) or (line, column)
            names = [m.name for m in catalogue.models()]
            hint = schemas.suggest(model, names) or f"models: {', '.join(names)}"
            unknown.append(
                Problem(file, at[0], at[1], f"prices[{index}].model", f"no model {model!r}", hint)
            )
        rules.append(
            PriceRule(
                _rule_fields(raw), int(raw["credits"]), file, line, column, f"prices[{index}]"
            )
        )
    if unknown:
        raise JobError(unknown)
    return rules


def job_rules(job: Job) -> list[PriceRule]:
    return rules_from(job.data.get("prices"), job.marks, job.file, catalogue=job.catalogue)


def load_rules(
    path: str, aliases: dict[str, str] | None = None, catalogue: Catalogue | None = None
) -> list[PriceRule]:
    """The rules of a `--prices FILE`: a YAML mapping with one key, `prices`, as in a job file.
    `aliases`: the provider's older spellings of fields, as the rules may still write them."""
    text = read_text_file(path)
    data, marks = parse_yaml(text, path)
    if isinstance(data, dict) and isinstance(data.get("prices"), list):
        for rule in data["prices"]:
            for old, new in (aliases or {}).items():
                if isinstance(rule, dict) and old in rule and new not in rule:
                    rule[new] = rule.pop(old)
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
    return rules_from(data["prices"], marks, path, catalogue=catalogue)


def class_key(body: dict[str, Any], catalogue: Catalogue) -> str:
    """A request's class as JSON (how the `prices` table and messages name it)."""
    cls = catalogue.price_class(body)
    try:
        return _remembered_key(cls, cast(Hashable, catalogue))
    except TypeError:  # an option value that cannot be hashed (a list): spelled afresh
        return _key_of(cls, catalogue)


def class_key_of(cls: tuple[Any, ...], catalogue: Catalogue) -> str:
    """A price class (the catalogue's `price_class`) as its key."""
    return _key_of(cls, catalogue)


def _key_of(cls: tuple[Any, ...], catalogue: Any) -> str:
    return json.dumps(catalogue.class_document(cls), sort_keys=True, separators=(",", ":"))


# A run names the class of every request it submits, of which there are a few: each spelled once.
_remembered_key = functools.lru_cache(maxsize=1024)(_key_of)


def describe_class(key: str, catalogue: Catalogue | None = None) -> str:
    """`wan2.2-pro 480p 5 s 16:9` for a class key (of the default provider's, if not said)."""
    return (catalogue or providers.catalogue_of(None)).describe_class(json.loads(key))


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
    """Every known price of one provider's requests: the declared rules, then the learned
    prices by class."""

    def __init__(
        self,
        rules: Iterable[PriceRule] = (),
        learned: dict[str, tuple[int, int | None]] | None = None,
        catalogue: Catalogue | None = None,
    ):
        self.catalogue = catalogue or providers.catalogue_of(None)
        self.rules = sorted(rules, key=lambda r: -r.specificity)
        self.learned = learned or {}  # class key → (credits, run id)
        self._memo: dict[tuple[Any, ...], Price | None] = {}
        # A rule naming a prompt, an image URL or an option that does not change the price
        # makes a price depend on more than the class: then prices are not remembered per class.
        self._by_class = all(rule.reads_only_the_class(self.catalogue) for rule in self.rules)

    def class_key(self, body: dict[str, Any]) -> str:
        return class_key(body, self.catalogue)

    def describe_class(self, key: str) -> str:
        return describe_class(key, self.catalogue)

    def price(self, body: dict[str, Any]) -> Price | None:
        """The price of `body`, or None when nothing declares or taught it. Raises PriceTie."""
        if not self.rules and not self.learned:
            return None
        try:
            key = self.catalogue.price_class(body) if self._by_class else None
            if key is not None and key in self._memo:
                return self._memo[key]
        except TypeError:  # an unhashable option value: no shortcut
            key = None
        found = self._declared(body)
        if found is None and self.learned:
            learned = self.learned.get(self.class_key(body))
            found = Price(learned[0], f"learned from run {learned[1]}") if learned else None
        if key is not None:
            self._memo[key] = found
        return found

    def _declared(self, body: dict[str, Any]) -> Price | None:
        best: PriceRule | None = None
        fields = self.catalogue.fields(body) if self.rules else Fields()
        for rule in self.rules:
            if best is not None and rule.specificity < best.specificity:
                break
            if rule.matches(fields, self.catalogue):
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
        learned = self.learned.get(self.class_key(body)) if self.learned else None
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
        learned = self.learned.get(self.class_key(body)) if self.learned else None
        if learned is None or not self.rules:
            return None
        declared = self._declared(body)
        if declared is None or declared.credits == learned[0]:
            return None
        return (
            f"{self.describe_class(self.class_key(body))}: {declared.credits:,} credits {declared.source}, but the balance "
            f"showed {learned[0]:,} (learned from run {learned[1]}); a cap counts {max(declared.credits, learned[0]):,}"
        )


def no_prices(catalogue: Catalogue) -> PriceBook:
    """A book with no price in it, for one provider's requests."""
    return PriceBook(catalogue=catalogue)
