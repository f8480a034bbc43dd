"""Output paths checked before the counting starts, so that a typo costs a second, not a batch's counts
(a bad --out, --json or --csv used to fail with a traceback after every image had been counted)."""

from __future__ import annotations

from pathlib import Path

import typer


def ready_folder(path: Path, option: str) -> Path:
    """`path` as a folder that exists and takes files (created now, with its parents)."""
    if path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file, not a folder", param_hint=option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".deepace-write-test"
        probe.touch()
        probe.unlink()
    except OSError as e:
        raise typer.BadParameter(f"cannot write in {path}: {e.strerror or e}", param_hint=option) from e
    return path


def ready_file(path: Path, option: str) -> Path:
    """`path` as a file that can be written (its folder created now; the file itself left as it was)."""
    if path.is_dir():
        raise typer.BadParameter(f"{path} is a folder, not a file", param_hint=option)
    ready_folder(path.parent, option)
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as e:
        raise typer.BadParameter(f"cannot write {path}: {e.strerror or e}", param_hint=option) from e
    if not existed:
        path.unlink()
    return path
