"""The command line for job files: validate, plan, schema."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from importlib.metadata import entry_points

from helpers import REPO, job_text, prompts

from batchgen import __version__

FAST = ("--yes", "--rpm", "60000")

EXAMPLE = REPO / "jobs" / "example.yaml"


def test_version_and_help(cli):
    assert __version__ in cli("--version").stdout
    for command in ("validate", "plan", "schema"):
        assert cli(command, "--help").exit_code == 0


def test_the_batchgen_command_freezes_what_it_imported_out_of_the_collectors_sight():
    """The `batchgen` script runs `batchgen.__main__:command`, which keeps the garbage
    collector off the objects every command imports (and off them all at exit)."""
    (script,) = entry_points(group="console_scripts", name="batchgen")
    assert script.value == "batchgen.__main__:command"
    code = (
        "import gc, sys\nfrom batchgen.__main__ import command\nsys.argv = ['batchgen', '--version']\n"
        "try:\n    command()\nexcept SystemExit:\n    print(gc.get_freeze_count())"
    )
    frozen = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()[-1]
    assert int(frozen) > 10_000  # the modules of the command line and everything they made


def test_validate_the_example(cli):
    result = cli("validate", EXAMPLE)
    assert result.exit_code == 0
    assert "ok, 21 requests (7 wan2.2-fast, 2 wan2.2-lite, 12 wan2.2-pro)" in result.stdout


def test_validate_several_files_exits_2_if_any_is_broken(cli):
    result = cli("validate", EXAMPLE, REPO / "tests" / "broken" / "enum_typo.yaml")
    assert result.exit_code == 2
    assert "example.yaml: ok" in result.stdout


def test_plan_json_keys_are_reproduced_by_an_independent_sha256(cli):
    result = cli("plan", EXAMPLE, "--json")
    assert result.exit_code == 0
    plan = json.loads(result.stdout)
    assert plan["job"] == "garden-cats" and plan["api_base"] == "https://api.pixwith.ai"
    assert plan["counts"]["total"] == plan["counts"]["new"] == len(plan["requests"]) == 21
    for row in plan["requests"]:
        document = {"api": plan["api_base"], "body": row["body"], "variant": row["variant"]}
        canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        assert row["key"] == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
        assert row["action"] == "new"
        assert set(row["body"]) <= {"prompt", "model_id", "image_urls", "options"}


def test_plan_counts_by_model(cli):
    result = cli("plan", EXAMPLE)
    assert result.exit_code == 0
    assert "wan2.2-pro     new 12" in result.stdout


def test_plan_of_a_broken_job_exits_2_without_traceback(cli):
    result = cli("plan", REPO / "tests" / "broken" / "lite_duration.yaml")
    assert result.exit_code == 2
    assert "lite_duration.yaml:6:" in result.stderr


def test_base_url_changes_the_keys(cli):
    default = json.loads(cli("plan", EXAMPLE, "--json").stdout)
    sandbox = json.loads(
        cli("plan", EXAMPLE, "--json", "--base-url", "http://127.0.0.1:8787/").stdout
    )
    assert sandbox["api_base"] == "http://127.0.0.1:8787"
    assert not {r["key"] for r in default["requests"]} & {r["key"] for r in sandbox["requests"]}


def test_the_progress_bar_on_a_terminal_ends_its_line_when_a_run_stops_early():
    import io

    from batchgen.output.progress import ProgressDisplay
    from batchgen.sending.run_report import RunReport

    stream = io.StringIO()
    bar = ProgressDisplay(10, stream=stream, tty=True)
    report = RunReport()
    report.outcomes["submitted"] = 3
    bar(report)
    assert (
        "[#######-----------------] 3/10 sent" in stream.getvalue()
        and not stream.getvalue().endswith("\n")
    )
    bar.finish()
    assert stream.getvalue().endswith("\n")
    bar.finish()  # nothing more to close
    assert stream.getvalue().count("\n") == 1


def test_plain_progress_lines_off_a_terminal():
    import io

    from batchgen.output.progress import ProgressDisplay
    from batchgen.sending.run_report import RunReport

    stream = io.StringIO()
    report = RunReport()
    report.outcomes.update(submitted=9, in_doubt=1)
    ProgressDisplay(10, stream=stream, tty=False)(report)
    assert stream.getvalue() == "progress: 10/10 done, 9 submitted, 1 errors\n"


# -- tasks as CSV ---------------------------------------------------------------------------------


def test_tasks_csv_with_no_rows_has_every_column(world, write_job):
    env = world()
    job = write_job(job_text(prompts(1)))
    env.cli("run", job, *FAST)
    header = env.cli("tasks", "--csv", "--state", "rejected").stdout.splitlines()
    with env.ledger() as ledger:
        assert header == [",".join(ledger.columns())]
    assert len(header[0].split(",")) == 22


def test_tasks_as_a_table_is_aligned_and_read_a_row_at_a_time():
    """The table is measured in one pass over the rows and written in a second, a line as each
    row comes: a million rows are never held at once (plain `tasks` of 300,000 rows held
    630 MB)."""
    import io

    from batchgen.output.reports import write_tasks

    out = io.StringIO()
    passes: list[list[int]] = []  # per pass: the lines written when each row was made

    def rows():
        passes.append([])
        for i in range(3):
            passes[-1].append(out.getvalue().count("\n"))
            yield {
                "key": f"{i:064x}",
                "label": "a-long-label" if i == 1 else None,
                "model": "2-9",
                "variant": 0,
                "state": "submitted",
                "status": "completed",
                "task_id": f"t{i}",
                "error": None,
                "prompt": f"p{i}",
            }

    write_tasks(out, rows, [], "text")
    lines = out.getvalue().splitlines()
    assert lines[0] == "id / key      model       v  state      status     task_id  prompt / error"
    assert lines[1] == f"{0:012x}  wan2.2-pro  0  submitted  completed  t0       p0"
    assert lines[2] == "a-long-label  wan2.2-pro  0  submitted  completed  t1       p1"
    assert passes == [[0, 0, 0], [1, 2, 3]]


def test_each_command_is_loaded_by_the_name_it_is_listed_under():
    import importlib

    from batchgen import providers
    from batchgen.cli import COMMANDS

    for name, where in COMMANDS.items():
        if not where:  # the default provider's own (`sandbox`)
            where = providers.named().sandbox_command
            assert where, name
            module, attribute = where.split(":")
        else:
            module, attribute = where.split(":")
            module = f"batchgen.cli.{module}"
        command = getattr(importlib.import_module(module), attribute)
        assert command.name == name, where


def test_a_read_command_loads_neither_the_http_client_nor_the_pages(tmp_path):
    """`status`, `tasks` and `--version` start in what they need: the commands are loaded
    when asked for, and what they share does not pull in what only sending needs."""
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from batchgen.cli import main\n"
        "for args in (['--version'], ['--ledger', sys.argv[1], 'status'],"
        " ['--ledger', sys.argv[1], 'tasks', '--json']):\n"
        "    assert CliRunner().invoke(main, args).exit_code == 0, args\n"
        "heavy = {'httpx', 'jinja2', 'batchgen.results.download', 'batchgen.app.run', 'batchgen.web'}\n"
        "print(sorted(heavy & {'.'.join(m.split('.')[:2]) if m.startswith('batchgen') else"
        " m.split('.')[0] for m in sys.modules}))\n"
    )
    from batchgen.ledger import Ledger

    with Ledger(tmp_path / "ledger.db"):
        pass
    out = subprocess.run(
        [sys.executable, "-c", probe, str(tmp_path / "ledger.db")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stdout


def test_run_prices_and_credits_speak_json_for_scripts(world, write_job):
    env = world(time_scale=0, credits=1000)
    job = write_job(job_text(prompts(2), name="scripted"))
    ran = env.cli("run", job, "--yes", "--rpm", "0", "--json")
    assert ran.exit_code == 0, ran.output
    result = json.loads(ran.stdout)  # stdout holds the one object, and nothing else
    assert result["job"] == "scripted" and result["exit_code"] == 0
    assert result["run"]["counts"]["submitted"] == 2 and result["run"]["exit_code"] == 0
    assert "scripted: 2 requests" in ran.stderr  # what people read went to stderr
    assert json.loads(env.cli("credits", "--json").stdout) == {"credits": 960}
    prices = json.loads(env.cli("prices", job, "--json").stdout)
    assert prices["job"] == "scripted" and prices["declared"] == []
    assert prices["learned"][0]["credits"] == 20  # learned from the run's balance drop
    assert prices["by_class"][0]["credits"] == 20


def test_quiet_says_only_what_went_wrong_and_verbose_a_line_per_request(world, write_job):
    env = world(time_scale=0)
    job = write_job(job_text(prompts(2), name="talk"))
    quiet = env.cli("--quiet", "run", job, "--yes", "--rpm", "0")
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr
    assert "run done: 2 create calls" in quiet.stdout  # the results asked for still come
    more = write_job(job_text(prompts(3), name="talk"))
    verbose = env.cli("-v", "run", more, "--yes", "--rpm", "0")
    assert verbose.exit_code == 0
    assert [line for line in verbose.stderr.splitlines() if line.startswith("  submitted: ")] != []
    assert env.cli("-q", "-v", "status").exit_code == 2
