"""Spend control: the balance, prices declared and learned, what a plan costs, the
balance check before sending, the per-run cap, and generating failed videos again.

The sandbox's prices are invented (Pro 480p 5 s: 20 credits); batchgen never assumes them:
each test declares them or lets batchgen learn them from the balance.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest
from helpers import PRO_DEFAULTS, job_text, prompts

from batchgen.jobs.prices import PriceBook, PriceRule
from batchgen.providers import Balance, Kind
from batchgen.providers.pixwith.client import PixwithApi
from batchgen.sending.budget import Budget

FAST = ("--yes", "--rpm", "0")
PRO_PRICE = "prices:\n  - {model: wan2.2-pro, options.resolution: 480p, credits: 20}\n"


def priced_job(n: int, *, prices: str = PRO_PRICE, limits: str = "", tag: str = "p") -> str:
    return job_text(prompts(n, tag=tag), limits=limits).replace(
        "requests:\n", prices + "requests:\n", 1
    )


# -- 1. the balance -------------------------------------------------------------------------------


def test_credits_prints_the_balance(world):
    env = world(credits=1234)
    result = env.cli("credits")
    assert result.exit_code == 0 and result.stdout.strip() == "1,234 credits"
    assert env.cli("credits", env={"PIXWITH_API_KEY": "key_notthekey0000"}).exit_code == 3


def test_the_sandbox_deducts_at_creation_and_refuses_when_short(world, write_job):
    env = world(credits=50)  # two Pro 480p 5 s at 20, then 10 left
    job = write_job(job_text(prompts(3)))
    result = env.cli("run", job, *FAST, "--concurrency", "1")
    assert result.exit_code == 3 and "out of credit" in result.output
    assert len(env.sandbox.created()) == 2 and env.sandbox.balance == 10


# -- 2. declared prices ---------------------------------------------------------------------------


def test_the_most_specific_rule_wins():
    def rule(credits, **fields):
        from batchgen.jobs.prices import _rule_fields

        return PriceRule(_rule_fields(fields), credits, "job.yaml", 1, 1, "prices[0]")

    book = PriceBook(
        [
            rule(10, model="wan2.2-pro"),
            rule(20, **{"model": "2-9", "options.resolution": "480p"}),
            rule(
                60, **{"model": "wan2.2-pro", "options.resolution": "720p", "options.duration": 8}
            ),
        ]
    )
    body = {"model_id": "2-9", "options": {"resolution": "480p", "duration": 5}}
    assert book.credits(body) == 20
    assert book.credits({"model_id": "2-9", "options": {"resolution": "720p", "duration": 8}}) == 60
    assert book.credits({"model_id": "2-9", "options": {"resolution": "720p", "duration": 5}}) == 10
    assert book.credits({"model_id": "2-10", "options": {}}) is None


def test_a_tie_is_a_located_error(cli, write_job):
    job = write_job(
        priced_job(
            2,
            prices=(
                "prices:\n"
                "  - {model: wan2.2-pro, options.resolution: 480p, credits: 20}\n"
                "  - {model: wan2.2-pro, options.duration: 5, credits: 25}\n"
            ),
        )
    )
    result = cli("plan", job)
    assert result.exit_code == 2
    assert (
        "job.yaml:7:5: error: prices[0]" in result.stderr
        and "prices[1]" in result.stderr
        and "equally specific" in result.stderr
    )


@pytest.mark.parametrize(
    "rule, words",
    [
        ("{model: wan2.2-pro, credits: -5}", "minimum"),
        ("{model: wan2.2-pro, credits: 2.5}", "integer"),
        ("{model: wan2.2-pro}", "credits"),
        ("{modle: wan2.2-pro, credits: 5}", "did you mean 'model'"),
        ("{model: wan9, credits: 5}", "wan9"),
    ],
)
def test_a_malformed_rule_is_exit_2_at_its_line(cli, write_job, rule, words):
    job = write_job(priced_job(1, prices=f"prices:\n  - {rule}\n"))
    result = cli("validate", job)
    assert result.exit_code == 2 and "job.yaml:7:" in result.stderr and words in result.stderr, (
        result.stderr
    )


def test_a_prices_file_has_the_same_format(world, write_job, tmp_path):
    env = world()
    job = write_job(job_text(prompts(3)))
    prices = tmp_path / "prices.yaml"
    prices.write_text(PRO_PRICE)
    plan = json.loads(env.cli("plan", job, "--json", "--prices", prices).stdout)
    assert plan["counts"]["credits"] == {
        "total": 60,
        "unknown": 0,
        "by_model": {"wan2.2-pro": 60},
        "unknown_classes": [],
    }
    assert {r["credits"] for r in plan["requests"]} == {20}
    prices.write_text("prices:\n  - {model: wan2.2-pro, credits: nan}\n")
    bad = env.cli("plan", job, "--prices", prices)
    assert bad.exit_code == 2 and "prices.yaml:2:" in bad.stderr


def test_editors_know_the_prices_format():
    from batchgen.jobs import schemas

    definition = schemas.schema("job")
    assert definition["properties"]["prices"]["$ref"] == "#/$defs/prices"
    assert "credits" in definition["$defs"]["price_rule"]["required"]
    assert "max_credits" in definition["properties"]["limits"]["properties"]


# -- 4. what a plan costs -------------------------------------------------------------------------


def test_plan_shows_the_cost_per_model_and_what_has_no_price(cli, write_job):
    job = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + PRO_PRICE
        + "requests:\n  - matrix: {prompt: [a, b, c], model: [wan2.2-pro, wan2.2-fast]}\n"
    )
    text = cli("plan", job)
    assert text.exit_code == 0
    assert "cost: 60 credits at known prices (wan2.2-pro 60)" in text.stdout
    assert "no known price for 3 of them: wan2.2-fast 16:9 5 s 480p (3)" in text.stdout
    plan = json.loads(cli("plan", job, "--json").stdout)
    assert plan["counts"]["credits"]["total"] == 60 and plan["counts"]["credits"]["unknown"] == 3
    assert sorted({r["credits"] for r in plan["requests"]}, key=str) == [20, None]


# -- 3. learned prices ----------------------------------------------------------------------------


def test_a_price_learned_from_the_balance_appears_in_the_next_plan(world, write_job):
    env = world(credits=1000)
    job = write_job(job_text(prompts(3)))
    first = env.cli("run", job, *FAST)
    assert first.exit_code == 0
    assert (
        "learned: wan2.2-pro 16:9 5 s 480p costs 20 credits (run 1: 3 requests, balance 1,000 → 940)"
        in first.stderr
    )
    with env.ledger() as ledger:
        run = ledger.db.conn.execute("SELECT credits_before, credits_after FROM runs").fetchone()
        assert tuple(run) == (1000, 940)
    more = write_job(job_text(prompts(5, tag="more")), name="more.yaml")
    plan = env.cli("plan", more)
    assert "cost: 100 credits at known prices (wan2.2-pro 100)" in plan.stdout
    listing = env.cli("prices", more)
    assert "learned from run 1" in listing.stdout and "run 1 (3 requests" in listing.stdout


def test_declared_prices_beat_learned_ones(world, write_job):
    env = world(credits=1000)
    env.cli("run", write_job(job_text(prompts(2))), *FAST)  # learns 20
    job = write_job(
        priced_job(2, prices="prices:\n  - {model: wan2.2-pro, credits: 25}\n", tag="declared"),
        name="d.yaml",
    )
    assert "cost: 50 credits" in env.cli("plan", job).stdout
    listing = env.cli("prices", job).stdout
    assert "declared at" in listing and "25" in listing


def test_no_price_is_learned_from_a_run_of_two_classes(world, write_job):
    env = world(credits=1000)
    job = write_job(
        "version: 1\n"
        + PRO_DEFAULTS
        + "requests:\n  - matrix: {prompt: [a, b], options.duration: [5, 8]}\n"
    )
    result = env.cli("run", job, *FAST)
    assert (
        result.exit_code == 0
        and "no price learned: the run sent 2 kinds of request" in result.stderr
    )
    with env.ledger() as ledger:
        assert ledger.prices.all() == []


# -- 5. the balance check and the cap -------------------------------------------------------------


def test_a_balance_that_does_not_cover_the_known_cost_sends_nothing(world, write_job):
    env = world(credits=100)
    job = write_job(priced_job(8))  # 8 x 20 = 160
    result = env.cli("run", job, *FAST)
    assert result.exit_code == 3 and "160 credits and the balance is 100" in result.output
    assert env.sandbox.created() == [] and env.rows() == []
    partial = env.cli("run", job, *FAST, "--allow-partial", "--concurrency", "1")
    assert len(env.sandbox.created()) == 5  # in job order, what 100 covers
    assert [c.body["prompt"] for c in env.sandbox.created()] == prompts(8)[:5]
    assert partial.exit_code == 0 or "not sent yet" in partial.output


def test_max_credits_60_at_20_with_concurrency_4_sends_exactly_3(world, write_job):
    env = world(latency_ms=50)
    job = write_job(priced_job(10))
    result = env.cli("run", job, *FAST, "--concurrency", "4", "--max-credits", "60")
    assert result.exit_code == 1, result.output
    assert "stopped at the spend cap" in result.output
    assert len([c for c in env.sandbox.calls if c.endpoint == "create"]) == 3


def test_limits_max_credits_in_the_job(world, write_job):
    env = world()
    job = write_job(priced_job(10, limits="{max_credits: 40}"))
    env.cli("run", job, *FAST, "--concurrency", "4")
    assert len(env.sandbox.created()) == 2


def test_a_cap_needs_a_price_for_every_class_it_sends(world, write_job):
    env = world()
    job = write_job(job_text(prompts(2)))
    result = env.cli("run", job, *FAST, "--max-credits", "100")
    assert result.exit_code == 2 and "wan2.2-pro 16:9 5 s 480p (2 requests)" in result.output
    assert env.sandbox.calls == []


@pytest.mark.parametrize("value", ["0", "nan", "-1", "ten"])
def test_a_bad_max_credits_is_exit_2(world, write_job, value):
    env = world()
    result = env.cli("run", write_job(priced_job(1)), *FAST, "--max-credits", value)
    assert result.exit_code == 2 and env.sandbox.calls == []


def test_an_unreadable_balance_never_blocks_a_run_without_a_cap_but_does_with_one(
    world, write_job, monkeypatch
):
    env = world()
    monkeypatch.setattr(
        PixwithApi,
        "balance",
        lambda self: Balance(None, "the answer holds no balance", Kind.IN_DOUBT),
    )
    job = write_job(priced_job(2))
    free = env.cli("run", job, *FAST)
    assert (
        free.exit_code == 0
        and "balance unknown (the answer holds no balance): sending without a balance check"
        in free.stderr
    )
    capped = env.cli(
        "run", write_job(priced_job(2, tag="capped"), name="c.yaml"), *FAST, "--max-credits", "100"
    )
    assert capped.exit_code == 3 and "with a cap nothing is sent" in capped.output
    assert len(env.sandbox.created()) == 2


def test_two_runs_at_once_stay_within_their_own_caps(world, write_job):
    env = world(latency_ms=30)
    job = write_job(priced_job(20))
    runs = [
        env.popen("run", job, *FAST, "--concurrency", "4", "--max-credits", "60") for _ in range(2)
    ]
    for process in runs:
        process.communicate(timeout=60)
    created = len(env.sandbox.created())
    assert created <= 6  # 60 + 60 credits at 20 each, together
    assert set(env.created_bodies().values()) == {1}


class StillClock:
    at = 0.0

    def now(self):
        return self.at


def test_the_cap_also_stops_when_the_balance_falls_by_it():
    # Another client spends on the account meanwhile: the re-read balance shows it.
    clock = StillClock()
    balances = [999]
    budget = Budget(
        200,
        PriceBook([PriceRule((), 1, "j", 1, 1, "prices[0]")]),
        balance_before=1000,
        read_balance=lambda: balances[-1],
        clock=clock,
    )  # type: ignore[arg-type]
    body = {"model_id": "2-9"}
    first = budget.reserve(body)
    assert (
        first and budget.created(first) and budget.balance_holds()
    )  # a class's first create: read at once
    for _ in range(48):  # then no re-read before 50 creates or 30 s
        reservation = budget.reserve(body)
        assert reservation and not budget.created(reservation)
    balances.append(951)
    clock.at = 31.0
    reservation = budget.reserve(body)
    assert (
        reservation
        and budget.created(reservation)
        and budget.balance_holds()
        and budget.stopped is None
    )  # no fall beyond the prices
    balances.append(790)
    clock.at = 62.0
    reservation = budget.reserve(body)
    assert reservation and budget.created(reservation) and budget.balance_holds() is False
    assert budget.stopped and "fell by 210" in budget.stopped
    assert not budget.reserve(body)  # and no more claims


def test_the_cap_reserves_before_claiming_and_refunds_what_created_nothing():
    budget = Budget(30, PriceBook([PriceRule((), 10, "j", 1, 1, "prices[0]")]))
    body = {"model_id": "2-9"}
    reservations = [budget.reserve(body) for _ in range(3)]
    assert all(reservations)
    assert not budget.reserve(body) and "cap of 30" in (budget.stopped or "")
    budget.refund(reservations[0])
    assert budget.committed == 20


def test_a_class_s_first_request_goes_out_alone_until_the_balance_shows_its_price():
    """The others of its class wait for the reading: with a price wrong by 8x, they are then
    reserved at the price the balance showed."""
    balances = [1000]
    notices: list[str] = []
    budget = Budget(
        100,
        PriceBook([PriceRule((), 5, "j", 1, 1, "prices[0]")]),
        balance_before=1000,
        read_balance=lambda: balances[-1],
        notice=notices.append,
    )
    body = {"model_id": "2-9"}
    probe = budget.reserve(body)
    assert probe is not None
    waiting = threading.Event()
    got: list = []

    def second_worker():
        waiting.set()
        got.append(budget.reserve(body))

    worker = threading.Thread(target=second_worker)
    worker.start()
    waiting.wait(10)
    assert not got  # it waits (it cannot have reserved while the probe is out)
    balances.append(960)  # the API charged 40
    assert budget.created(probe) and budget.balance_holds()
    worker.join(10)
    assert got[0] is not None and got[0].credits == 40
    assert notices and "fell by 40" in notices[0] and "x8.00" in notices[0]
    assert budget.reserve(body) is None  # 40 spent + 40 in flight + 40 > 100
    assert "cap of 100" in (budget.stopped or "")


@pytest.mark.parametrize("declared, cap, requests", [(5, 100, 10), (1, 100, 60)])
def test_a_cap_holds_against_the_balance_when_the_prices_are_wrong(
    world, write_job, declared, cap, requests
):
    """The sandbox charges 20 a request; the job says far less. Spent: never past the cap by
    more than the calls in flight when the balance showed it (here none: the first of the
    class goes out alone)."""
    env = world(latency_ms=20, credits=10_000)
    job = write_job(priced_job(requests, prices=PRO_PRICE.replace("20", str(declared))))
    result = env.cli("run", job, *FAST, "--concurrency", "4", "--max-credits", str(cap))
    assert result.exit_code == 1, result.output
    spent = 10_000 - env.sandbox.balance
    assert spent <= cap, (spent, result.output)
    assert (
        "stopped at the spend cap" in result.output
        and "the cap now counts each price" in result.stderr
    )
    run = json.loads(env.cli("runs", "--json").stdout.splitlines()[0])
    assert run["counts"]["spent_by_balance"] == spent and run["counts"]["spent"] == declared * len(
        env.sandbox.created()
    )
    assert f"{spent:,} (prices: {run['counts']['spent']:,})" in env.cli("runs").stdout


def test_a_declared_price_the_balance_contradicts_is_said_in_run_plan_and_prices(world, write_job):
    env = world(credits=10_000)
    learner = write_job(job_text(prompts(2, tag="learn")), name="learn.yaml")
    assert env.cli("run", learner, *FAST).exit_code == 0  # learns 20 from the balance
    job = write_job(priced_job(2, prices=PRO_PRICE.replace("20", "5")))
    said = "20 (learned from run 1); a cap counts 20"
    assert said in env.cli("plan", job).output
    assert said in env.cli("prices", job).output
    assert said in env.cli("run", job, *FAST).stderr


# -- 6. generating failed videos again ------------------------------------------------------------


def test_regenerate_failed_keeps_the_earlier_task_and_counts_against_the_cap(world, write_job):
    env = world(time_scale=0, fail_fraction=1.0)
    job = write_job(priced_job(3))
    assert env.cli("run", job, *FAST, "--wait").exit_code == 1  # every generation failed
    first_ids = {r["key"]: r["task_id"] for r in env.rows()}
    plan = json.loads(env.cli("plan", job, "--json").stdout)
    assert {r["action"] for r in plan["requests"]} == {"generation_failed"}
    again = env.cli("run", job, *FAST)
    assert (
        again.exit_code == 1
        and "3 generations failed" in again.output
        and "--regenerate-failed" in again.output
    )
    assert len(env.sandbox.created()) == 3  # not sent again without the flag
    env.sandbox.config.fail_fraction = 0.0
    result = env.cli(
        "run", job, *FAST, "--regenerate-failed", "--max-credits", "40", "--concurrency", "1"
    )
    assert "stopped at the spend cap" in result.output
    assert len(env.sandbox.created()) == 5  # two more, the cap's worth
    with env.ledger() as ledger:
        for key, old in first_ids.items():
            history = ledger.tasks.history(key)
            row = ledger.tasks.task(key)
            if row["status"] != "failed":
                assert [h["task_id"] for h in history] == [old] and row["task_id"] != old
            else:
                assert history == [] and row["task_id"] == old


def test_prices_command_without_a_ledger_says_what_is_declared(tmp_path, write_job):
    (tmp_path / ".git").mkdir()
    job = write_job(priced_job(1))
    result = subprocess.run(
        [sys.executable, "-m", "batchgen", "prices", str(job)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 0
    assert (
        "wan2.2-pro" in result.stdout
        and "declared at" in result.stdout
        and "none yet" in result.stdout
    )
    assert not (tmp_path / "batchgen.db").exists()


def test_a_class_key_is_the_same_remembered_or_not_and_an_unhashable_option_is_spelled_afresh():
    from batchgen.jobs.prices import class_key
    from batchgen.providers.pixwith.catalogue import CATALOGUE

    body = {
        "model_id": "2-9",
        "prompt": "a",
        "options": {"duration": 5, "prompt_optimization": True},
    }
    assert class_key(body, CATALOGUE) == class_key(dict(body, prompt="b"), CATALOGUE)
    listed = {"model_id": "2-9", "options": {"duration": 5, "frames": [1, 2]}}  # not hashable
    assert (
        class_key(listed, CATALOGUE)
        == '{"images":0,"model_id":"2-9","options":{"duration":5,"frames":[1,2]}}'
    )


def test_the_issue_s_job_priced_8x_too_low_stops_within_its_cap(world, write_job):
    """limits.max_credits: 100, a declared price of 5 where the API charges 40 (Pro 720p in
    the sandbox): it spent 800 before the cap held against the balance; now at most 100."""
    env = world(latency_ms=20, credits=10_000)
    job = write_job(
        "version: 1\nlimits: {max_credits: 100}\nprices:\n  - {model: wan2.2-pro, credits: 5}\n"
        + PRO_DEFAULTS.replace("480p", "720p")
        + "requests:\n"
        + "".join(f"  - prompt: shot {i}\n" for i in range(20))
    )
    result = env.cli("run", job, *FAST, "--concurrency", "8")
    assert result.exit_code == 1 and "x8.00" in result.stderr, result.output
    assert 10_000 - env.sandbox.balance <= 100


def test_a_declared_price_of_zero_does_not_let_the_cap_through(world, write_job):
    """prices: a price of 0 where the API charges 20, --max-credits 100: it spent 30 requests'
    worth (600) with exit 0. The balance shows the first request's cost, and the cap holds."""
    env = world(latency_ms=20, credits=10_000)
    job = write_job(priced_job(30, prices=PRO_PRICE.replace("20", "0")))
    result = env.cli("run", job, *FAST, "--concurrency", "4", "--max-credits", "100")
    assert result.exit_code == 1, result.output
    assert 10_000 - env.sandbox.balance <= 100
    assert "declared free" in result.stderr and "stopped at the spend cap" in result.output
