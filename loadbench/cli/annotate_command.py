"""``loadbench annotate``: sample answers out to a CSV for a person to score, scores back in."""

from __future__ import annotations

from pathlib import Path

import click
import orjson


@click.group()
def annotate() -> None:
    """Score a run's sample answers by hand: export a CSV, fill the score column (1-5),
    import it back into the result file."""


@annotate.command("export")
@click.argument("result", metavar="RESULT.json")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("scores.csv"),
    show_default=True,
    help="CSV to write: one row per model and prompt, with an empty score column.",
)
def export(result: str, output: Path) -> None:
    """Write one row per model and prompt (model, prompt_id, prompt, answer, aspects, score,
    note); scores already given by hand are filled in, the rest left empty."""
    from loadbench.models import export_csv
    from loadbench.results import load_result, write_atomic

    doc = load_result(result)
    text = export_csv(doc, result)
    write_atomic(output, text.encode("utf-8"))
    rows = sum(len(m.get("samples") or ()) for m in doc["models"])
    click.echo(f"scores: {output} ({rows} rows; fill the score column)")


@annotate.command("import")
@click.argument("result", metavar="RESULT.json")
@click.argument("scores", metavar="SCORES.csv", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Result file to write (default: RESULT.json itself, replaced atomically).",
)
def import_(result: str, scores: Path, output: Path | None) -> None:
    """Merge the filled scores (1-5; empty cells change nothing) into each model's quality
    as manual scores. Every problem in the CSV is reported, naming its line and field."""
    from loadbench.errors import UsageError
    from loadbench.models import import_scores
    from loadbench.results import dumps, load_result, write_atomic

    load_result(result)  # checks it is a result file; its summary is recomputed, so...
    doc = orjson.loads(Path(result).read_bytes())  # ...the file as written is what we merge into
    try:
        text = scores.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise UsageError(f"{scores}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{scores}: not UTF-8 text: {exc.reason}") from None
    merged = import_scores(doc, text, result_path=result, csv_path=str(scores))
    path = output or Path(result)
    write_atomic(path, dumps(merged))
    click.echo(f"result: {path}")
