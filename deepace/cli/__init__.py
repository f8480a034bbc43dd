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
    """Run the command. A problem with what the user gave it (a model file, annotations, an image, a
    prediction file, a setting) ends it with one line and exit status 2, not a traceback."""
    import sys

    from deepace.config import ConfigError
    from deepace.data.images import ImageReadError
    from deepace.data.predictions import PredictionFileError
    from deepace.data.records import AnnotationError
    from deepace.inference import ModelFileError

    try:
        app()
    except (ModelFileError, AnnotationError, ImageReadError, PredictionFileError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
