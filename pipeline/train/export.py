"""The output: an open_clip ``local-dir:`` folder, loadable by open_clip itself and by mmindex.

```
<folder>/
  open_clip_config.json        model_cfg (the base architecture) + preprocess_cfg (the base's)
  open_clip_model.safetensors  the weights (after WiSE-FT when asked)
  evaluation.json              before / after metrics on the held-out pairs, the α sweep
  provenance.json              base model and embedder, pairs per split, hyper-parameters; written last
  .work/                       while training: decoded pairs and the epoch checkpoint (removed at the end)
```

``open_clip.create_model_and_transforms("local-dir:<folder>")`` loads it, and so does
``mmindex index --model local-dir:<folder>`` (a new embedder id: the config and weights hash).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from mmindex.pipeline.embed.identity import LOCAL_DIR_PREFIX
from mmindex.pipeline.embed.weights import ResolvedWeights
from mmindex.pipeline.errors import ModelUnavailableError
from mmindex.pipeline.io.atomic import write_atomic

CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
EVALUATION_NAME = "evaluation.json"
PROVENANCE_NAME = "provenance.json"
WORK_DIR = ".work"


def base_model_config(model_name: str, weights: ResolvedWeights) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of the base model (a named architecture or a local-dir)."""
    import open_clip

    if model_name.startswith(LOCAL_DIR_PREFIX):
        folder = Path(model_name[len(LOCAL_DIR_PREFIX) :]).expanduser()
        return dict(json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"])
    config = open_clip.get_model_config(model_name)
    if config is None:
        raise ModelUnavailableError(f"open_clip has no config for {model_name!r}; fine-tuning needs one")
    config = copy.deepcopy(config)
    if weights.quick_gelu:
        config["quick_gelu"] = True
    return dict(config)


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, default=str) + "\n").encode("utf-8")


def write_local_dir(folder: Path, model: Any, model_cfg: dict[str, Any], evaluation: dict[str, Any],
                    provenance: dict[str, Any]) -> Path:
    """Write the folder (each file atomically, the provenance last: a folder with one is complete)."""
    import open_clip
    from safetensors.torch import save

    folder.mkdir(parents=True, exist_ok=True)
    (folder / PROVENANCE_NAME).unlink(missing_ok=True)
    preprocess = {key: list(value) if isinstance(value, tuple) else value
                  for key, value in open_clip.get_model_preprocess_cfg(model).items()}
    write_atomic(folder / CONFIG_NAME, _json_bytes({"model_cfg": model_cfg, "preprocess_cfg": preprocess}))
    tensors = {name: tensor.detach().to("cpu").contiguous() for name, tensor in model.state_dict().items()}
    write_atomic(folder / WEIGHTS_NAME, save(tensors))
    write_atomic(folder / EVALUATION_NAME, _json_bytes(evaluation))
    write_atomic(folder / PROVENANCE_NAME, _json_bytes(provenance))
    return folder


def read_provenance(folder: Path) -> dict[str, Any] | None:
    """The provenance of a complete output folder, or None."""
    try:
        data = json.loads((folder / PROVENANCE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe_provenance(model: str) -> str | None:
    """One line on where a ``local-dir:`` model came from, if mmindex fine-tuned it."""
    if not model.startswith(LOCAL_DIR_PREFIX):
        return None
    data = read_provenance(Path(model[len(LOCAL_DIR_PREFIX) :]).expanduser())
    if data is None:
        return None
    alpha = data.get("wise_alpha")
    return (f"fine-tuned from {data.get('base_model')} on {data.get('pairs', {}).get('train', '?')} pairs of "
            f"{data.get('collection')!r}" + (f", WiSE-FT α={alpha:g}" if isinstance(alpha, int | float) and alpha != 1 else ""))
