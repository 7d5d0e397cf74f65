"""Fine-tuning speed against open_clip's own training script, and the recall table before/after.

Builds a captioned corpus of coloured shapes (captions learnable from the pixels), indexes it with
a tiny random-init model, then in one run:

1. ``mmindex finetune`` (``finetune_collection``): pairs/s of its training steps, and end to end;
2. ``python -m open_clip_train.main`` on a CSV of the same training pairs, same model (the same
   ``local-dir:`` folder), batch size, epochs, learning rate and precision: pairs/s from its own
   per-step ``Batch (t)`` log (``--log-every-n-steps 1``; the first steps are warm-up and skipped);
3. the held-out recall table before and after.

Goal: mmindex's training pairs/s ≥ 1.0× open_clip_train's. On a shared CPU, compare the ratio, not
the absolute figures. Usage: python benchmarks/finetune.py [--per-class 40] [--epochs 5]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

COLOURS = {"red": (220, 30, 30), "green": (30, 170, 40), "blue": (30, 60, 220), "yellow": (230, 200, 20)}
SHAPES = ("circle", "square", "triangle")
CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
WARMUP_STEPS_SKIPPED = 3


def write_corpus(folder: Path, per_class: int) -> None:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    classes = [(colour, shape) for colour in COLOURS for shape in SHAPES]
    folder.mkdir(parents=True)
    for index in range(per_class * len(classes)):
        colour, shape = classes[index % len(classes)]
        image = Image.new("RGB", (64, 64), (255, 255, 255))
        draw = ImageDraw.Draw(image)
        r = int(rng.integers(10, 24))
        cx, cy = (int(v) for v in rng.integers(r, 64 - r, size=2))
        box = [cx - r, cy - r, cx + r, cy + r]
        if shape == "circle":
            draw.ellipse(box, fill=COLOURS[colour])
        elif shape == "square":
            draw.rectangle(box, fill=COLOURS[colour])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=COLOURS[colour])
        image.save(folder / f"shape{index:04d}.png")
        (folder / f"shape{index:04d}.txt").write_text(f"a {colour} {shape}\n", encoding="utf-8")


def write_model(folder: Path) -> Path:
    import open_clip
    import torch

    torch.manual_seed(0)
    folder.mkdir(parents=True)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": CONFIG}))
    torch.save(open_clip.CLIP(**CONFIG).state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def run_open_clip_train(work: Path, model: Path, pairs: list[tuple[str, str]], args: argparse.Namespace) -> tuple[float, float]:
    """(pairs/s of its steps, wall seconds of the whole command) for open_clip_train on ``pairs``."""
    table = work / "pairs.csv"
    with table.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filepath", "title"])
        writer.writerows(pairs)
    command = [
        sys.executable, "-m", "open_clip_train.main", "--model", f"local-dir:{model}", "--train-data", str(table),
        "--dataset-type", "csv", "--csv-separator", ",", "--csv-img-key", "filepath", "--csv-caption-key", "title",
        "--batch-size", str(args.batch_size), "--epochs", str(args.epochs), "--lr", str(args.lr), "--wd", "0.1",
        "--warmup", str(args.warmup), "--precision", "fp32", "--workers", "1", "--device", "cpu", "--seed", "0",
        "--logs", str(work / "logs"), "--name", "bench", "--save-frequency", "0", "--zeroshot-frequency", "0",
        "--val-frequency", "0", "--log-every-n-steps", "1", "--report-to", "",
    ]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"open_clip_train failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    log = (work / "logs" / "bench" / "out.log").read_text(encoding="utf-8")
    times = [float(value) for value in re.findall(r"Batch \(t\): ([0-9.]+)", log)]
    steady = times[WARMUP_STEPS_SKIPPED:] or times
    return args.batch_size / float(np.mean(steady)), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=40, help="Images per caption class (12 classes).")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--bf16", action="store_true", help="Also train mmindex at bf16 autocast (speed and recall vs fp32).")
    args = parser.parse_args()

    import torch

    from mmindex.pipeline.collection import collection_state
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.pipeline.train.evaluation import METRIC_COLUMNS, metric_cells
    from mmindex.pipeline.train.finetune import FinetuneRequest, finetune_collection
    from mmindex.pipeline.train.loop import TrainConfig
    from mmindex.pipeline.train.pairs import captioned_images, split_pairs
    from mmindex.schemas.config import Settings

    console = Console(width=150)
    with tempfile.TemporaryDirectory(prefix="mmindex-bench-finetune-") as tmp:
        work = Path(tmp)
        write_corpus(work / "corpus", args.per_class)
        model = write_model(work / "base")
        settings = Settings(root=work / "root", model=f"local-dir:{model}", pretrained=None, device="cpu", precision="fp32",
                            text_model="none", workers=0)
        index_source(IndexRequest(source=work / "corpus", collection="shapes", source_id="shapes"), settings)
        config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, precision="fp32")
        request = FinetuneRequest("shapes", config, output=work / "tuned", device="cpu")
        started, cpu = time.perf_counter(), time.process_time()
        report = finetune_collection(settings, request)
        ours_wall, ours_cpu = time.perf_counter() - started, time.process_time() - cpu
        assert report.train is not None
        bf16 = None
        if args.bf16:
            bf16_request = FinetuneRequest("shapes", replace(config, precision="bf16"), output=work / "tuned-bf16", device="cpu")
            bf16 = finetune_collection(settings, bf16_request)
        train = split_pairs(captioned_images(settings.root, collection_state(settings, "shapes")), request.holdout).train
        theirs_rate, theirs_wall = run_open_clip_train(work, model, [(pair.ref.uri, pair.caption) for pair in train], args)

    speed = Table("trainer", "pairs", "epochs", "batch", "training pairs/s", "whole command (s)", title="fine-tuning speed (CPU, fp32)")
    speed.add_row("mmindex finetune", str(len(train)), str(args.epochs), str(args.batch_size),
                  f"{report.train.pairs_per_second:,.1f}", f"{ours_wall:.1f} (cpu {ours_cpu:.1f})")
    speed.add_row("open_clip_train.main", str(len(train)), str(args.epochs), str(args.batch_size), f"{theirs_rate:,.1f}",
                  f"{theirs_wall:.1f}")
    if bf16 is not None and bf16.train is not None:
        speed.add_row("mmindex finetune (bf16 autocast)", str(len(train)), str(args.epochs), str(args.batch_size),
                      f"{bf16.train.pairs_per_second:,.1f}", "")
    console.print(speed)
    console.print(f"mmindex / open_clip_train training pairs/s: {report.train.pairs_per_second / theirs_rate:.2f}x (goal >= 1.0x); "
                  f"torch threads {torch.get_num_threads()}")
    recall = Table("model", *METRIC_COLUMNS, title="held-out retrieval")
    for name, metrics in report.rows():
        recall.add_row(name, *metric_cells(metrics))
    if bf16 is not None:
        recall.add_row("fine-tuned (bf16 autocast)", *metric_cells(bf16.tuned))
    console.print(recall)


if __name__ == "__main__":
    main()
