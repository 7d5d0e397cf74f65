"""``index --recheck``: the URLs of unchanged manifest rows are revalidated with conditional requests
against a real server on 127.0.0.1, which counts the bodies it sent: a 304 costs no body, only an
item whose content hash changed is re-embedded (from the one body fetched), and a server without
validators is refetched and compared by hash. Shards written before the validator columns read as
"no validators"."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from helpers import ImageServer, run_cli
from PIL import Image
from test_manifest_source import write_manifest

from mmindex.pipeline.ingest.options import IndexOptions
from mmindex.pipeline.ingest.run import IndexRequest, index_source
from mmindex.pipeline.io.catalog import load_catalog
from mmindex.pipeline.io.integrity import record_for, write_record
from mmindex.pipeline.io.paths import IndexPaths
from mmindex.pipeline.io.shards import ShardLog
from mmindex.pipeline.io.state_file import read_state
from mmindex.pipeline.sources.resolve import source_options
from mmindex.schemas.config import Settings


def picture(color: str, size: int = 48) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (size, size), color)
    for x in range(0, size, 8):  # some structure, so two colours embed differently
        image.putpixel((x, x), (255 - x, x, 128))
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


@pytest.fixture
def server():
    with ImageServer() as running:
        yield running


class Runs:
    """Index one manifest into collection ``m`` again and again, with the fetch options of the tests."""

    def __init__(self, tmp_path: Path, rows: list[dict], embedder: object) -> None:
        self.manifest = write_manifest(tmp_path / "m.jsonl", rows)
        self.settings = Settings(root=tmp_path / "root", workers=0, batch_size=2, shard_size=3)
        self.options = source_options(allow_network=["127.0.0.1/32"], fetch_retries=0, fetch_timeout=5)
        self.embedder = embedder

    def __call__(self, **extra: object):
        request = IndexRequest(str(self.manifest), "m", source_options=self.options, **extra)  # type: ignore[arg-type]
        return index_source(request, self.settings, embedder=self.embedder)  # type: ignore[arg-type]

    def rewrite(self, rows: list[dict]) -> None:
        write_manifest(self.manifest, rows)

    def shard_log(self) -> ShardLog:
        entry = read_state(self.settings.root).collections["m"]
        return IndexPaths(self.settings.root).shard_log("m", entry.current.physical_name)

    def stored(self) -> dict[str, tuple[str | None, str | None, str | None]]:
        """Each item's stored (sha256, etag, last_modified), by path."""
        items = load_catalog(self.shard_log()).items.to_pylist()
        return {item["path"]: (item["sha256"], item["etag"], item["last_modified"]) for item in items}


def test_recheck_sends_no_body_for_unchanged_content_and_one_for_a_changed_image(
    tmp_path: Path, server: ImageServer, tiny_embedder: object
) -> None:
    urls = [server.add_image("red.jpg", picture("red")), server.add_image("green.jpg", picture("green")),
            server.add_image("blue.jpg", picture("blue"), route="dated")]  # Last-Modified only
    runs = Runs(tmp_path, [{"url": url, "caption": url.rsplit("/", 1)[1]} for url in urls], tiny_embedder)
    first = runs()
    assert first.counts.embedded == 3 and server.bodies_sent() == 3
    stored = runs.stored()
    assert [bool(etag) for _, etag, _ in stored.values()] == [True, True, False]
    assert [bool(modified) for _, _, modified in stored.values()] == [False, False, True]

    planned = runs(recheck=True, dry_run=True)
    assert (planned.counts.rechecked, planned.counts.unchanged) == (3, 3) and server.bodies_sent() == 3

    again = runs(recheck=True)
    counts = again.counts
    assert (counts.rechecked, counts.recheck_not_modified, counts.recheck_changed, counts.embedded) == (3, 3, 0, 0)
    assert counts.shards_written == 0 and server.bodies_sent() == 3  # every answer a 304
    assert sum(server.requests.values()) == 6

    server.add_image("green.jpg", picture("yellow"))
    server.add_image("blue.jpg", picture("navy"))
    assert runs().counts.embedded == 0 and server.bodies_sent() == 3  # without --recheck: rows unchanged, no request
    changed = runs(recheck=True)
    counts = changed.counts
    assert (counts.recheck_not_modified, counts.recheck_changed, counts.embedded) == (1, 2, 2)
    assert server.bodies_sent() == 5  # exactly the two changed bodies, each fetched once
    assert sorted(key.rsplit("/", 1)[1] for key in changed.embedded_keys) == ["blue.jpg", "green.jpg"]
    after = runs.stored()
    green = next(path for path in after if path.endswith("green.jpg"))
    assert after[green][0] != stored[green][0] and after[green][1] != stored[green][1]

    settled = runs(recheck=True)
    assert (settled.counts.recheck_not_modified, settled.counts.embedded) == (3, 0)
    assert server.bodies_sent() == 5  # the new validators were stored: 304s again


def test_a_server_without_validators_is_refetched_and_compared_by_hash(
    tmp_path: Path, server: ImageServer, tiny_embedder: object
) -> None:
    urls = [server.add_image(f"{color}.jpg", picture(color), route="plain") for color in ("red", "green")]
    runs = Runs(tmp_path, [{"url": url} for url in urls], tiny_embedder)
    assert runs().counts.embedded == 2 and server.bodies_sent() == 2
    assert {etag for _, etag, _ in runs.stored().values()} == {None}

    same = runs(recheck=True)
    counts = same.counts
    assert (counts.rechecked, counts.recheck_not_modified, counts.recheck_changed, counts.embedded) == (2, 0, 0, 0)
    assert server.bodies_sent() == 4 and counts.shards_written == 0  # refetched, same hash: nothing re-embedded

    server.add_image("green.jpg", picture("purple"))
    changed = runs(recheck=True)
    assert (changed.counts.recheck_changed, changed.counts.embedded) == (1, 1)
    assert server.bodies_sent() == 6 and [key.rsplit("/", 1)[1] for key in changed.embedded_keys] == ["green.jpg"]


def _as_older_shards(log: ShardLog) -> None:
    """Rewrite every shard as one written before the validator columns (with its integrity record),
    and the materialized catalog as one without them (valid through the same shard)."""
    for ref in log.shards():
        table = pq.read_table(ref.path)
        older = table.drop_columns(["etag", "last_modified"])
        sink = pa.BufferOutputStream()
        pq.write_table(older, sink)
        data = sink.getvalue().to_pybytes()
        Path(ref.path).write_bytes(data)
        write_record(log.records_dir, record_for(Path(ref.path).name, ref.seq, data, older.num_rows))
    catalog = pq.read_table(log.catalog_path)  # and the catalog file an older writer left
    pq.write_table(catalog.drop_columns(["etag", "last_modified"]), log.catalog_path)


def test_shards_without_validator_columns_read_as_no_validators(
    tmp_path: Path, server: ImageServer, tiny_embedder: object
) -> None:
    url = server.add_image("red.jpg", picture("red"))
    runs = Runs(tmp_path, [{"url": url}], tiny_embedder)
    runs()
    _as_older_shards(runs.shard_log())
    assert {etag for _, etag, _ in runs.stored().values()} == {None}
    assert runs().counts.unchanged == 1 and server.bodies_sent() == 1  # an older shard still plans as before

    upgraded = runs(recheck=True)  # no validators: one plain GET, the same hash, the ETag stored from its stored vectors
    assert (upgraded.counts.recheck_changed, upgraded.counts.embedded, upgraded.counts.shards_written) == (0, 0, 1)
    assert server.bodies_sent() == 2 and {bool(etag) for _, etag, _ in runs.stored().values()} == {True}
    assert runs(recheck=True).counts.recheck_not_modified == 1 and server.bodies_sent() == 2


def test_recheck_with_retry_failed_and_deleted_rows_from_the_cli(
    tmp_path: Path, server: ImageServer, tiny_local_dir: Path
) -> None:
    rows = [{"url": server.add_image("red.jpg", picture("red")), "caption": "red"},
            {"url": server.add_image("green.jpg", picture("green")), "caption": "green"},
            {"url": server.url("/missing.jpg"), "caption": "gone"}]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    flags = ["--root", str(tmp_path / "root"), "--model", f"local-dir:{tiny_local_dir}", "--workers", "0",
             "--allow-network", "127.0.0.1/32", "--fetch-retries", "0", "--json"]
    first = run_cli("index", str(manifest), "-c", "web", *flags)
    assert first.code == 0, first.stderr
    assert (json.loads(first.stdout)["images"], server.bodies_sent()) == (2, 2)

    del rows[1]
    write_manifest(manifest, rows)
    result = run_cli("index", str(manifest), "-c", "web", "--recheck", "--retry-failed", *flags)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["plan"]["deleted"] == 1 and report["plan"]["retried"] == 1
    assert report["recheck"] == {"rechecked": 1, "not_modified": 1, "changed": 0, "failed": 0}
    assert (report["embedded"], report["images"], report["failed"]) == (0, 0, 1)
    assert server.requests["/missing.jpg"] == 2 and server.bodies_sent() == 2


def test_recheck_is_an_index_option_for_the_cli_the_schedule_and_the_flow() -> None:
    options = IndexOptions(source="m.jsonl", collection="m", recheck=True)
    assert options.request().recheck and options.given()["recheck"] is True
    assert not IndexOptions(source="m.jsonl", collection="m").request().recheck


def test_the_flow_rechecks_like_the_cli(
    prefect_api: str, server: ImageServer, tiny_local_dir: Path, tmp_path: Path
) -> None:
    """The ingest flow's shard tasks revalidate their own items: the same bodies, the same index."""
    from test_flows import _assert_same_index, _flow_params, _settings

    from mmindex.flows.ingest import ingest_flow

    urls = [server.add_image(f"{color}.jpg", picture(color)) for color in ("red", "green", "blue", "white")]
    manifest = write_manifest(tmp_path / "m.jsonl", [{"url": url, "caption": url} for url in urls])
    cli, flow = _settings(tmp_path / "cli", tiny_local_dir), _settings(tmp_path / "flow", tiny_local_dir)
    fetching = {"allow_network": ["127.0.0.1/32"], "fetch_retries": 0}

    def run_cli_side(**extra: object):
        options = IndexOptions(source=str(manifest), collection="c", **fetching, **extra)  # type: ignore[arg-type]
        return index_source(options.request(), cli)

    def run_flow(**extra: object) -> dict:
        return ingest_flow(**_flow_params(manifest, flow.root, tiny_local_dir, **fetching, **extra))

    run_cli_side()
    assert run_flow()["images"] == 4 and server.bodies_sent() == 8
    server.add_image("blue.jpg", picture("black"))
    cli_report = run_cli_side(recheck=True)
    flow_report = run_flow(recheck=True)
    assert flow_report["recheck"] == {"rechecked": 4, "not_modified": 3, "changed": 1, "failed": 0}
    assert (cli_report.counts.recheck_changed, cli_report.counts.recheck_not_modified) == (1, 3)
    assert flow_report["embedded_keys"] == cli_report.embedded_keys and server.bodies_sent() == 10
    _assert_same_index(cli, flow, "c")
