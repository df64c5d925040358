"""`batchgen models`: the model catalogue, with each model's rules (parsing and printing only)."""

from __future__ import annotations

import click

from ..jobs import models
from ..output.reports import models_report


@click.command("models")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON object per model, a line each, with its rules.",
)
@click.option(
    "--rules", is_flag=True, help="Each model's rules (images and options) under the list."
)
def models_command(as_json: bool, rules: bool) -> None:
    """The video models batchgen knows: names, API ids, and what each takes.

    A model whose provider page contradicts itself (or another page) is unverified: usable
    only with --allow-unverified-models, and the list says why."""
    for line in models_report(models.catalogue(), as_json=as_json, rules=rules):
        click.echo(line)
