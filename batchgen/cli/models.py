"""`batchgen models`: the model catalogue, with each model's rules (parsing and printing only)."""

from __future__ import annotations

import click

from .. import providers


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
@click.option("--provider", "provider_name", help="Whose models (default: the default provider's).")
def models_command(as_json: bool, rules: bool, provider_name: str | None) -> None:
    """The video models batchgen knows: names, API ids, and what each takes.

    A model whose provider page contradicts itself (or another page) is unverified: usable
    only with --allow-unverified-models, and the list says why."""
    catalogue = providers.catalogue_of(provider_name)
    for line in catalogue.report(as_json=as_json, rules=rules):
        click.echo(line)
