"""The `deepace` command. Each subcommand group lives in its own module and registers itself here."""

from __future__ import annotations

import typer

from deepace.cli import case_cmds, count_cmd, data_cmds, evaluate_cmd, heads_cmd, synth_cmd, train_cmds

app = typer.Typer(
    help="DeepACE: count chromosomes in metaphase images.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

for module in (count_cmd, case_cmds, train_cmds, heads_cmd, evaluate_cmd, data_cmds, synth_cmd):
    module.register(app)


def main() -> None:
    app()
