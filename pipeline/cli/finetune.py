"""``mmindex finetune``: fine-tune a collection's model on its captioned images (``pipeline/train/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from mmindex.pipeline.cli.app import command
from mmindex.pipeline.embed.precision import Precision


class _TrainBar:
    """Rich progress of the training steps with the loss and pairs/s (on stderr)."""

    def __init__(self, console: Any, description: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console,
        )
        self._description = description
        self._task: Any = None

    def __enter__(self) -> _TrainBar:
        self._progress.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._progress.stop()

    def start(self, total_steps: int, done_steps: int) -> None:
        self._task = self._progress.add_task(self._description, total=total_steps, completed=done_steps, status="")

    def step(self, loss: float, pairs: int) -> None:
        self._progress.advance(self._task, 1)
        speed = self._progress.tasks[0].speed  # steps/s
        pairs_rate = f"  {speed * pairs:,.1f} pairs/s" if speed else ""
        self._progress.update(self._task, status=f"loss {loss:.3f}{pairs_rate}")

    def epoch_done(self, epoch: int, epochs: int) -> None:
        self._progress.update(self._task, description=f"{self._description} (epoch {epoch}/{epochs})")


@command()
def finetune(
    collection: Annotated[str, typer.Option("--collection", "-c", help="Collection whose captioned images train its model.")],
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training pairs.")] = 5,
    batch_size: Annotated[int, typer.Option("--batch-size", min=2, help="Pairs per step (the contrastive negatives).")] = 64,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak learning rate (AdamW).")] = 1e-5,
    warmup: Annotated[
        int | None,
        typer.Option("--warmup", min=0, help="Warmup steps before cosine decay (default: a tenth of the steps).", show_default=False)
    ] = None,
    lock_image: Annotated[bool, typer.Option("--lock-image", help="Freeze the image tower (train the text tower; LiT).")] = False,
    lock_text: Annotated[bool, typer.Option("--lock-text", help="Freeze the text tower.")] = False,
    unlock_last: Annotated[
        int | None,
        typer.Option("--unlock-last", min=1, help="Freeze both towers but their last K layer groups.", show_default=False)
    ] = None,
    wise_alpha: Annotated[
        str,
        typer.Option("--wise-alpha", help="WiSE-FT: save (1-A)*base + A*tuned; 'auto' picks A on the validation split.")
    ] = "1",
    holdout: Annotated[float, typer.Option("--holdout", help="Share of captioned images held out for the test (by item key).")] = 0.2,
    output: Annotated[
        Path | None,
        typer.Option("--output", help="Output folder (default: under the index root, models/COLLECTION/...).", show_default=False)
    ] = None,
    migrate: Annotated[bool, typer.Option("--migrate", help="Then migrate the collection to the fine-tuned model (no downtime).")] = False,
    device: Annotated[str | None, typer.Option("--device", help="auto | cpu | cuda (auto: CUDA when present).", show_default=False)] = None,
    precision: Annotated[
        Precision,
        typer.Option("--precision", help="auto | fp32 | bf16 | fp16 (auto: fp16 AMP on CUDA, fp32 on CPU).")
    ] = "auto",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the pair order.")] = 0,
    root: Annotated[str | None, typer.Option("--root", help="Index root. Env: MMINDEX_ROOT.", show_default=False)] = None,
    qdrant_url: Annotated[
        str | None,
        typer.Option("--qdrant-url", help="Qdrant URL (else embedded). Env: QDRANT_URL.", show_default=False)
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the evaluation as JSON.")] = False,
) -> None:
    """Fine-tune a collection's model on its own captioned images (contrastive InfoNCE), report
    held-out retrieval before/after, save an open_clip local-dir folder, optionally --migrate to it.

    Example: mmindex finetune -c products --epochs 5 --wise-alpha auto --migrate
    """
    from rich.table import Table

    from mmindex.pipeline.cli.app import RichProgress, emit_json, load_cli_settings
    from mmindex.pipeline.cli.ingest import print_index_report
    from mmindex.pipeline.cli.terminal import err, markup, out
    from mmindex.pipeline.train.evaluation import METRIC_COLUMNS, metric_cells
    from mmindex.pipeline.train.finetune import finetune_collection, finetune_request, migrate_to_finetuned

    settings = load_cli_settings(root=root, device=device, qdrant_url=qdrant_url)
    request = finetune_request(
        collection, epochs=epochs, batch_size=batch_size, lr=lr, warmup=warmup, lock_image=lock_image, lock_text=lock_text,
        unlock_last=unlock_last, wise_alpha=wise_alpha, holdout=holdout, output=output, device=settings.device,
        precision=precision, seed=seed,
    )
    with _TrainBar(err, f"fine-tuning {markup(collection)}") as bar:
        report = finetune_collection(settings, request, bar)
    if as_json:
        emit_json({"model": report.model, **report.as_json()})
    else:
        table = Table("model", *METRIC_COLUMNS, box=None, pad_edge=False)
        for name, metrics in report.rows():
            table.add_row(name, *metric_cells(metrics))
        out.print(table)
        for point in report.sweep:
            out.print(f"WiSE-FT α={point.alpha:g}: validation mean recall {point.validation.mean_recall:.3f}")
        err.print(f"[green]saved[/] {markup(report.model)}")
    if migrate:
        with RichProgress(f"migrating {markup(collection)}") as progress:
            migrated = migrate_to_finetuned(settings, collection, report, progress)
        print_index_report(err, migrated)
