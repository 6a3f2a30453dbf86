"""The streaming loader: exactly-once across ranks × workers, seeded shuffling, epochs,
batching, nulls → unavailable, labels."""

from __future__ import annotations

import json

import pytest
import torch

from mmtrain.data import build_loader
from tests.data.helpers import config_for, write_parquet


def ids_of(loader) -> list[int]:
    return [i for batch in loader for i in batch.labels.tolist()]


@pytest.mark.parametrize(("shards", "interleave"), [(4, 1), (3, 1), (4, 4), (3, 2)])
def test_every_example_once_across_two_ranks_and_two_workers(sharded, shards, interleave):
    root = sharded(rows=600, shards=shards)
    config = config_for(root, num_workers=2, persistent_workers=False, interleave_shards=interleave)
    for epoch in (0, 1):
        per_rank = []
        for rank in range(2):
            loader = build_loader(config, rank=rank, world_size=2)
            loader.set_epoch(epoch)
            per_rank.append(ids_of(loader))
        seen = per_rank[0] + per_rank[1]
        assert len(seen) == len(set(seen)) == 600
        assert set(seen) == set(range(600))
        assert min(len(ids) for ids in per_rank) > 100


def test_shuffle_is_seeded_and_set_epoch_reorders(sharded):
    root = sharded(rows=300, shards=3)
    loader = build_loader(config_for(root, seed=5))
    first = ids_of(loader)
    again = ids_of(build_loader(config_for(root, seed=5)))
    loader.set_epoch(1)
    next_epoch = ids_of(loader)
    other_seed = ids_of(build_loader(config_for(root, seed=6)))
    assert first == again
    assert first != next_epoch and sorted(first) == sorted(next_epoch) == list(range(300))
    assert first != other_seed
    assert first != sorted(first)
    unshuffled = ids_of(build_loader(config_for(root, shuffle=False)))
    assert unshuffled == list(range(300))


def test_persistent_workers_follow_set_epoch(sharded):
    root = sharded(rows=200, shards=2)
    loader = build_loader(config_for(root, num_workers=2, persistent_workers=True))
    orders = []
    for epoch in (0, 1, 0):
        loader.set_epoch(epoch)
        orders.append(ids_of(loader))
    assert orders[0] == orders[2] != orders[1]
    assert sorted(orders[1]) == list(range(200))


def test_batches_have_the_configured_size_and_cells_decode_in_place(sharded):
    root = sharded(rows=100, shards=2)
    loader = build_loader(config_for(root, batch_size=16))
    batches = list(loader)
    assert [b.size for b in batches] == [16] * 6 + [4]
    for batch in batches:
        ids = batch.labels.float()
        assert batch.x["a"].shape == (batch.size, 2) and batch.x["b"].shape == (batch.size, 3)
        assert torch.equal(batch.x["a"], torch.stack([ids, -ids], 1))
        assert torch.equal(batch.x["b"], ids[:, None].expand(-1, 3))
        assert batch.avail.dtype == torch.bool and batch.avail.all()
        assert torch.equal(batch.extras["id"], batch.labels)
    dropped = build_loader(config_for(root, batch_size=16, drop_last=True))
    assert [b.size for b in dropped] == [16] * 6
    assert loader.num_rows == 100
    assert loader.modality_names == ["a", "b"]
    assert loader.event_shapes == {"a": (2,), "b": (3,)}


def test_null_cells_are_unavailable_and_zero(sharded):
    root = sharded(rows=90, shards=3, null_b_every=3)
    loader = build_loader(config_for(root))
    count = 0
    for batch in loader:
        null = batch.labels % 3 == 0
        assert torch.equal(batch.avail[:, 1], ~null)
        assert batch.avail[:, 0].all()
        assert (batch.x["b"][null] == 0).all()
        count += batch.size
    assert count == 90
    stats = loader.stats
    assert stats.examples == 90 and stats.present == {"a": 90, "b": 60}
    metrics = loader.metrics()
    assert metrics["data/presence/b"] == pytest.approx(60 / 90)
    assert metrics["data/skipped_rows"] == 0


def test_absent_json_keys_are_unavailable(tmp_path):
    path = tmp_path / "rows.jsonl"
    lines = []
    for i in range(20):
        row = {"id": i, "a": [i, -i]}
        if i % 2:
            row["b"] = [i, i, i]
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n")
    batches = list(build_loader(config_for(path, batch_size=8)))
    ids = torch.cat([b.labels for b in batches])
    avail = torch.cat([b.avail for b in batches])
    assert sorted(ids.tolist()) == list(range(20))
    assert torch.equal(avail[:, 1], ids % 2 == 1)


def test_arrow_files_stream_through_the_same_path(tmp_path):
    import datasets

    rows = {
        "id": list(range(30)),
        "a": [[i, -i] for i in range(30)],
        "b": [[i] * 3 for i in range(30)],
    }
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "saved"))
    batches = list(build_loader(config_for(tmp_path / "saved" / "*.arrow", shuffle=False)))
    assert torch.cat([b.labels for b in batches]).tolist() == list(range(30))


def test_several_label_columns_and_vector_labels(tmp_path):
    rows = {
        "id": list(range(12)),
        "a": [[i, -i] for i in range(12)],
        "b": [[i] * 3 for i in range(12)],
        "truth": [[i / 2, i / 3] for i in range(12)],
    }
    write_parquet(tmp_path / "train.parquet", rows)
    config = config_for(tmp_path, label_columns=["id", "truth"], shuffle=False)
    batch = next(iter(build_loader(config)))
    assert batch.labels.dtype == torch.int64
    assert batch.extras["truth"].shape == (12, 2)
    assert torch.allclose(batch.extras["truth"][:, 0], batch.labels / 2)


def test_whole_chunk_decoding_gives_the_same_batches(sharded):
    from tests.data.helpers import BatchArrayPlugin

    root = sharded(rows=100, shards=2, null_b_every=4)
    batched = {
        "a": {"kind": "test-array-batch", "options": {"shape": [2]}},
        "b": {"kind": "test-array-batch", "options": {"shape": [3]}},
    }
    BatchArrayPlugin.calls.clear()
    fast = list(build_loader(config_for(root, modalities=batched)))
    slow = list(build_loader(config_for(root)))
    assert BatchArrayPlugin.calls and max(BatchArrayPlugin.calls) > 1
    for x, y in zip(fast, slow, strict=True):
        assert torch.equal(x.avail, y.avail) and torch.equal(x.labels, y.labels)
        assert all(torch.equal(x.x[k], y.x[k]) for k in ("a", "b"))


def test_ranks_sharing_shards_get_near_equal_shares(sharded):
    root = sharded(rows=1000, shards=4)
    config = config_for(root, read_rows=1024, batch_size=64)
    sizes = []
    for rank in range(3):
        ids = ids_of(build_loader(config, rank=rank, world_size=3))
        sizes.append(len(ids))
    assert sum(sizes) == 1000 and min(sizes) >= 256
