"""#16.7: the qdrant-client path under server faults, against a fake Qdrant on 127.0.0.1
(``tests/fake_qdrant.py``: the REST routes mmindex uses over qdrant-client's local mode, faults
injected in front). Transient faults (connection reset before or after the server applied an
upsert, 503, 429, a response past the timeout) are retried with backoff and the run completes with
exactly its points; a fault that persists ends the run with one line naming the server (never its
API key), the Parquet shards intact, and the re-run applies only the shard that was not applied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_qdrant import FakeQdrant
from helpers import run_cli
from PIL import Image
from skimage import data as skdata

from mmindex.pipeline.errors import StoreUnavailableError
from mmindex.pipeline.ids import point_id
from mmindex.pipeline.store.client_store import ClientStore

API_KEY = "fake-qdrant-KEY-4f1c"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("server-faults-corpus")
    for name in ("astronaut", "chelsea", "coffee", "rocket"):
        Image.fromarray(getattr(skdata, name)()).resize((64, 64)).save(root / f"{name}.png")
    return root


def _index(corpus: Path, fake: FakeQdrant, root: Path, local_dir: Path) -> tuple[int, str, str]:
    return run_cli("index", str(corpus), "-c", "photos", "--root", str(root), "--model", f"local-dir:{local_dir}",
                   "--workers", "0", "--shard-size", "2", "--qdrant-url", fake.url, "--json",
                   env={"QDRANT_API_KEY": API_KEY})


def _points(fake: FakeQdrant) -> set[str]:
    (name,) = [c.name for c in fake.local.get_collections().collections]
    records, _ = fake.local.scroll(name, limit=100)
    assert fake.local.count(name).count == len(records)
    return {str(record.id) for record in records}


def _expected_ids(corpus: Path, root: Path) -> set[str]:
    state = json.loads((root / "state.json").read_text())
    (source_id,) = state["collections"]["photos"]["sources"]
    return {str(point_id(f"{source_id}/{path.name}")) for path in corpus.iterdir()}


def test_transient_faults_are_retried_and_nothing_is_lost_or_duplicated(
    tmp_path: Path, corpus: Path, tiny_local_dir: Path
) -> None:
    with FakeQdrant(api_key=API_KEY) as fake:
        fake.fail("PUT /points", "reset")  # shard 1: the first attempt never reaches the store,
        fake.fail("PUT /points", "reset-after", after=1)  # the second is applied but its answer lost
        fake.fail("PUT /points", "503", after=3)  # shard 2: a 503, then a 429, then it goes through
        fake.fail("PUT /points", "429", after=4)
        fake.fail("PUT /index", "503")
        result = _index(corpus, fake, tmp_path / "root", tiny_local_dir)
        assert result.code == 0, result.stderr
        assert json.loads(result.stdout)["images"] == 4
        assert fake.count("PUT /points") == 6  # two shards, four attempts retried
        assert _points(fake) == _expected_ids(corpus, tmp_path / "root")
        assert API_KEY not in result.stderr + result.stdout


def test_a_persistent_fault_stops_with_one_line_and_the_rerun_applies_what_is_left(
    tmp_path: Path, corpus: Path, tiny_local_dir: Path
) -> None:
    root = tmp_path / "root"
    with FakeQdrant(api_key=API_KEY) as fake:
        fake.fail("PUT /points", "reset", times=1000, after=1)  # the first shard applies, then the server is gone
        failed = _index(corpus, fake, root, tiny_local_dir)
        assert failed.code == 4 and "Traceback" not in failed.stderr
        (error,) = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert error.startswith(f"error: Qdrant at {fake.url}: upsert into 'photos--") and "(4 attempts)" in error
        assert API_KEY not in failed.stderr + failed.stdout
        shards = sorted(path.name for path in (root / "shards" / "photos").rglob("*.parquet"))
        assert len(shards) == 2  # both shards are durable; the second was not applied
        assert len(_points(fake)) == 2
        fake.clear_faults()
        rerun = _index(corpus, fake, root, tiny_local_dir)
        assert rerun.code == 0, rerun.stderr
        assert json.loads(rerun.stdout)["replayed_shards"] == 1
        assert _points(fake) == _expected_ids(corpus, root)


def test_a_slow_answer_is_retried_and_a_dead_server_is_one_clear_error() -> None:
    with FakeQdrant(api_key=API_KEY, slow_seconds=2.5) as fake:
        fake.fail("GET /collections", "slow")
        store = ClientStore.connect(fake.url, API_KEY, timeout=1)
        assert store.list_collections() == []
        assert fake.count("GET /collections") >= 2
        store.client.close()
        url = fake.url
    with pytest.raises(StoreUnavailableError, match=f"cannot reach Qdrant at {url}") as raised:
        ClientStore.connect(url, API_KEY, timeout=1)
    assert API_KEY not in str(raised.value)
