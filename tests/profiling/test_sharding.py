"""Sharded profiling: batches dealt to ranks, per-rank shard files merged deterministically, and a 2-process CPU run
(through the training launcher, gloo) that equals a single-process run record for record."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mgfusion.profiling.shards import split_batches
from mgfusion.profiling.sources import ImageRecord
from mgfusion.profiling.store import ResultStore, ShardWriter

from .conftest import photo
from .test_store import _fp, _rec


def test_split_batches_deals_whole_batches_round_robin():
    recs = [ImageRecord(image_id=str(i), path=f"{i}.png") for i in range(7)]
    ranks = split_batches(recs, batch_size=2, world_size=2)
    assert [[r.image_id for r in rank] for rank in ranks] == [["0", "1", "4", "5"], ["2", "3", "6"]]
    assert [len(r) for r in split_batches(recs, batch_size=4, world_size=3)] == [4, 3, 0]


def test_shards_merge_in_canonical_order_and_are_kept_after_a_kill(tmp_path):
    order = {"1": 0, "2": 1, "3": 2}
    key = lambda r: (order[r["image_id"]], r["encoder"])
    with ResultStore(tmp_path, _fp()) as store:
        store.append([_rec("a", "1"), _rec("b", "1")])
        w0, w1 = ShardWriter(tmp_path, 0, store.done), ShardWriter(tmp_path, 1, store.done)
        w1.append([_rec("b", "3"), _rec("a", "3")])
        w0.append([_rec("b", "2"), _rec("a", "2")])
        with pytest.raises(ValueError, match="refusing to store encoder 'a', image '1' twice"):
            w0.append([_rec("a", "1")])
    shard = tmp_path / "shards" / "rank1.jsonl"
    shard.write_bytes(shard.read_bytes() + b'{"encoder": "a", "image_id": "9", "metr')  # a rank killed mid-write
    with ResultStore(tmp_path, _fp()) as store:  # the next run merges what the killed ranks finished
        assert store.merge_shards(key) == 4
        assert [(r["encoder"], r["image_id"]) for r in store.records()] == [
            ("a", "1"), ("b", "1"), ("a", "2"), ("b", "2"), ("a", "3"), ("b", "3")]
        assert not list((tmp_path / "shards").glob("*.jsonl")) and store.merge_shards(key) == 0


@pytest.mark.slow
def test_two_cpu_processes_give_the_single_process_result(tmp_path, profile_cli):
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
        Image.fromarray(photo(name) if name != "camera" else photo("astronaut")[::-1].copy()).save(
            images / f"{name}.png")
    common = [f"images={images}", "encoders=[dinov3_micro16,sam2_hiera_micro]", "resolution=[48,64]", "batch_size=2",
              "num_workers=0", "device=cpu", "cost=false", "progress=false", "num_pca_images=2"]
    single, sharded = tmp_path / "single", tmp_path / "sharded"
    res = profile_cli([*common, f"output_dir={single}"])
    assert res.returncode == 0, res.stdout
    res = profile_cli([*common, f"output_dir={sharded}", "num_processes=2"])
    assert res.returncode == 0, res.stdout
    assert "5 images sharded across 2 processes (cpu)" in res.stdout

    def records(out: Path) -> dict:
        lines = (out / "per_image.jsonl").read_text().splitlines()
        return {(r["encoder"], r["image_id"]): r for r in map(json.loads, lines)}

    assert len(records(single)) == 5 * 4 and records(sharded) == records(single)
    for name in ("table_sc_ef.csv", "table_sc_ef.md", "controls.md", "metrics_long.csv", "recommended_fusion.yaml"):
        assert (sharded / name).read_text() == (single / name).read_text(), name
    summary = json.loads((sharded / "summary.json").read_text())
    assert summary["timing"]["num_processes"] == 2 and summary["timing"]["images"] == 5
    assert sorted(p.name for p in (sharded / "pca" / "dinov3_micro16").iterdir()) == ["astronaut.png.npz",
                                                                                       "camera.png.npz"]
    assert not (sharded / "shards").exists(), "shard files are merged and removed"
