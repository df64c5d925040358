"""The code's shape: modules follow the data's way, and nothing imports a module above it.

Each module of batchgen has a place in LAYERS, lowest first; a module may import only those
before it. That keeps the import graph acyclic and cli.py on top, doing nothing but parsing
and printing. A new module gets its place here.
"""

from __future__ import annotations

import ast
from pathlib import Path

from helpers import REPO

LAYERS = [
    "__init__",
    "jobs.__init__",
    "sending.__init__",
    "results.__init__",
    "app.__init__",
    "errors",
    "web.local_server",
    "times",
    "urls",
    "jobs.user_files",
    "jobs.yamldoc",
    "jobs.images",
    "jobs.schemas",
    "providers.keys",
    "providers.stored_keys",
    "providers.base",
    "providers.pixwith.facts",
    "providers.pixwith.bodies",
    "providers.__init__",
    "ledger.location",
    "output.__init__",
    "output.words",
    "output.console",
    "output.progress",
    "providers.pixwith.models",
    "providers.pixwith.model_schema",
    "providers.pixwith.catalogue",
    "jobs.job_files",
    "jobs.job",
    "jobs.referenced",
    "jobs.spec",
    "jobs.templates",
    "jobs.expand",
    "jobs.origins",
    "jobs.prices",
    "jobs.validate",
    "sending.plan",
    "output.reports",
    "ledger.journal",
    "ledger.run_locks",
    "ledger.connections",
    "ledger.migrations",
    "ledger.group_commit",
    "ledger.backend",
    "ledger.sqlite_file",
    "ledger.postgres_schema",
    "ledger.postgres",
    "ledger.store",
    "ledger.queries",
    "ledger.tables",
    "ledger.claims",
    "ledger.recovery",
    "ledger.__init__",
    "ledger.copying",
    "jobs.unchanged",
    "app.init",
    "sending.http_transport",
    "providers.pixwith.answers",
    "providers.pixwith.client",
    "sending.limits",
    "results.bounds",
    "sending.budget",
    "sending.run_report",
    "sending.submit",
    "app.spend",
    "sending.uploads",
    "results.poll",
    "results.download",
    "web.__init__",
    "web.tiles",
    "web.pages",
    "web.review_server",
    "app.promote",
    "providers.pixwith.sandbox.clips",
    "providers.pixwith.sandbox.state",
    "providers.pixwith.sandbox.storage",
    "providers.pixwith.sandbox.server",
    "providers.pixwith.sandbox.__init__",
    "providers.pixwith.__init__",
    "app.session",
    "app.follow",
    "app.run",
    "app.plan",
    "cli.options",
    "providers.pixwith.sandbox.command",
    "cli.common",
    "cli.check",
    "cli.run",
    "cli.follow",
    "cli.reads",
    "cli.init",
    "cli.models",
    "cli.review",
    "cli.ledger",
    "cli.keys",
    "cli.__init__",
    "__main__",
]
PACKAGE = REPO / "batchgen"


def source(module: str) -> Path:
    return PACKAGE / (module.replace(".", "/") + ".py")


def modules() -> list[str]:
    """Every module of the package, dotted from it: `errors`, `web.pages`, `web.__init__`."""
    return [".".join(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")]


def imports_of(module: str) -> set[str]:
    """The batchgen modules `module` imports, at run time (not under TYPE_CHECKING)."""
    tree = ast.parse(source(module).read_text())
    package = module.split(".")[:-1]  # the folder it is in: [] at the top, ["web"] in web/
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.ImportFrom) and node.level >= 1:
            base = package[: len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            for alias in node.names:  # `from .web import pages` imports web.pages
                named = ".".join([*target, alias.name])
                package_itself = ".".join([*target, "__init__"])  # `from .ledger import Ledger`
                found.add(
                    named
                    if named in LAYERS
                    else named + ".__init__"  # `from . import sandbox`, a package
                    if named + ".__init__" in LAYERS
                    else package_itself
                    if package_itself in LAYERS
                    else ".".join(target)
                )
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def test_every_module_has_a_layer():
    assert sorted(modules()) == sorted(LAYERS)


def test_no_module_imports_one_above_it():
    wrong = []
    for position, module in enumerate(LAYERS):
        for imported in imports_of(module):
            if imported in LAYERS and LAYERS.index(imported) >= position and module != "__main__":
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_sql_lives_in_the_ledger_modules():
    # (and in the sandbox's own store, which has none today)
    for path in PACKAGE.rglob("*.py"):
        if path.parent.name == "ledger" or path.stem == "migrations":
            continue
        text = path.read_text()
        for word in ("SELECT ", "UPDATE tasks", "INSERT INTO", "JOIN job_tasks"):
            assert word not in text, f"{path.name} has SQL ({word.strip()})"


def every_import_of(module: str) -> set[str]:
    """The top-level names of everything `module` imports, batchgen's own or not."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source(module).read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_the_command_line_speaks_neither_sql_nor_http():
    """The command modules parse and print; the ledger and the API are reached through their
    own modules, so neither a second ledger backend nor a second provider touches them."""
    commands = [m for m in LAYERS if m.startswith("cli.") or m == "output.console"]
    wrong = {m: every_import_of(m) & {"sqlite3", "sqlite_utils", "httpx"} for m in commands}
    assert not {m: found for m, found in wrong.items() if found}, wrong


def test_jsonschema_is_imported_only_to_check_a_job():
    """~50 ms of every start that poll, download, status and tasks do not need."""
    import subprocess
    import sys

    code = (
        "import sys; import batchgen.cli; print('jsonschema' in sys.modules);"
        " from batchgen.jobs import schemas; schemas.validator('job'); print('jsonschema' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]


def test_the_sandbox_is_imported_only_when_asked_for():
    """A command without --sandbox never loads the sandbox (its server, its fault knobs)."""
    import subprocess
    import sys

    code = (
        "import sys; import batchgen.cli, batchgen.app.run; print('batchgen.providers.pixwith.sandbox' in sys.modules);"
        " from batchgen.app.session import api_target;"
        " cm = api_target(sandbox=True, base_url='', api_key_file=None, need_key=False);"
        " cm.__enter__(); print('batchgen.providers.pixwith.sandbox' in sys.modules); cm.__exit__(None, None, None)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["False", "True"]
