"""Start-up stays cheap: commands that do not embed never import torch/open_clip, and loading a
model runs no forward pass (no warm-up) and hashes a checkpoint file once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "open_clip", "torchvision", "timm", "prefect")


def _modules_after(code: str, env: dict[str, str] | None = None) -> dict[str, bool]:
    probe = code + f"\nimport json, sys\nprint(json.dumps({{m: m in sys.modules for m in {HEAVY!r}}}))\n"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, **(env or {})}, timeout=120)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_importing_the_cli_imports_no_torch() -> None:
    assert not any(_modules_after("import mmindex.pipeline.cli").values())


def test_embed_modules_import_torch_lazily() -> None:
    code = "\n".join(f"import mmindex.pipeline.embed.{name}" for name in
                     ("model", "images", "precision", "preprocess", "gpu_decode", "weights"))
    code += "\nimport mmindex.pipeline.timing"
    assert not any(_modules_after(code).values())


def test_info_command_imports_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from mmindex.pipeline import cli\n"
        f"sys.argv = ['mmindex', 'info', '--root', {str(tmp_path)!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
    )
    loaded = _modules_after(code, {"XDG_CONFIG_HOME": str(tmp_path / "config")})
    assert not any(loaded.values()), loaded


def test_a_no_op_rerun_with_the_model_asked_for_imports_no_torch(
    tiny_local_dir: Path, photo_corpus: Path, tmp_path: Path
) -> None:
    """The preflight of a re-run that names its model checks the weights, and the device only
    where it can fail (``cuda``): a re-run with nothing to embed loads no torch."""
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    root = tmp_path / "root"
    model = f"local-dir:{tiny_local_dir}"
    from mmindex.pipeline.embed.model import ModelSpec

    first = index_source(IndexRequest(source=photo_corpus, collection="photos", model=ModelSpec(model)),
                         Settings(root=root, workers=0, text_model="none"))
    assert first.counts.points_upserted > 0
    code = (
        "import sys\n"
        "from mmindex.pipeline import cli\n"
        f"sys.argv = ['mmindex', 'index', {str(photo_corpus)!r}, '-c', 'photos', '--root', {str(root)!r},"
        f" '--model', {model!r}, '--text-model', 'none']\n"
        "try:\n    cli.main()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
    )
    loaded = _modules_after(code, {"XDG_CONFIG_HOME": str(tmp_path / "config"), "MMINDEX_DEVICE": "auto"})
    assert not loaded["torch"] and not loaded["open_clip"], loaded


def test_the_preflight_still_refuses_cuda_without_a_gpu(tiny_local_dir: Path, photo_corpus: Path, tmp_path: Path) -> None:
    import torch

    from mmindex.pipeline.embed.model import ModelSpec
    from mmindex.pipeline.errors import ModelUnavailableError
    from mmindex.pipeline.ingest.run import IndexRequest, preflight
    from mmindex.schemas.config import Settings

    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is visible")
    request = IndexRequest(source=photo_corpus, collection="photos", model=ModelSpec(f"local-dir:{tiny_local_dir}"))
    preflight(request, Settings(root=tmp_path / "root", device="auto"))
    with pytest.raises(ModelUnavailableError, match="no CUDA GPU"):
        preflight(request, Settings(root=tmp_path / "root", device="cuda"))


def test_loading_a_model_runs_no_forward_pass(
    tiny_model_config: str, tiny_checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip

    from mmindex.pipeline.embed.model import ModelSpec, load_embedder

    calls: list[str] = []
    for name in ("encode_image", "encode_text"):
        original = getattr(open_clip.CLIP, name)
        monkeypatch.setattr(open_clip.CLIP, name, lambda self, *a, _n=name, _o=original, **k: calls.append(_n) or _o(self, *a, **k))
    embedder = load_embedder(ModelSpec(tiny_model_config, str(tiny_checkpoint)), "cpu")
    assert calls == []
    assert embedder.dim == 32
    embedder.encode_texts(["a cat"])
    assert calls == ["encode_text"]


def test_a_checkpoint_is_hashed_once(tiny_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from mmindex.pipeline.embed import weights

    copy = tmp_path / "weights.pt"
    shutil.copy(tiny_checkpoint, copy)
    opened: list[Path] = []
    original = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object):
        if self == copy.resolve():
            opened.append(self)
        return original(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "open", counting_open)
    first = weights.file_sha256(copy)
    second = weights.file_sha256(copy)
    assert first == second and len(opened) == 1


def test_a_run_loads_the_model_once(
    tiny_model_config: str, tiny_checkpoint: Path, photo_corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first run names the new collection's version after the model and then embeds with that
    same model; a migration to another checkpoint likewise: one load per run, not two."""
    import shutil

    from mmindex.pipeline.embed import model
    from mmindex.pipeline.ingest.run import IndexRequest, index_source
    from mmindex.schemas.config import Settings

    loads: list[str] = []
    original = model.load_embedder

    def counting_load(spec, *args, **kwargs):
        loads.append(spec.pretrained)
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(model, "load_embedder", counting_load)
    settings = Settings(root=tmp_path / "root", workers=0, model=tiny_model_config, pretrained=str(tiny_checkpoint),
                        text_model="none")
    first = index_source(IndexRequest(source=photo_corpus, collection="photos"), settings)
    assert first.counts.failed == 0 and first.counts.points_upserted > 0
    assert loads == [str(tiny_checkpoint)]

    other = tmp_path / "other.pt"
    shutil.copy(tiny_checkpoint, other)
    import torch

    state = torch.load(other, weights_only=True)
    torch.save({name: tensor + 0.01 for name, tensor in state.items()}, other)  # other weights: a migration
    migrated = index_source(IndexRequest(source=photo_corpus, collection="photos"),
                            settings.model_copy(update={"pretrained": str(other)}))
    assert migrated.counts.points_upserted == first.counts.points_upserted
    assert loads == [str(tiny_checkpoint), str(other)]
