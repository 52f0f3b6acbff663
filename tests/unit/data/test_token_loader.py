from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from clusterlm.data.loader import Dataset, TokenLoader, TokenView
from clusterlm.errors import DataError


def take(loader: TokenLoader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [next(loader) for _ in range(n)]


def window_offsets(ds: Dataset, split: str, x: torch.Tensor) -> list[int]:
    """Recover each row's offset in the split (rows are long enough to be unique in this corpus)."""
    stream = np.asarray(ds.tokens(split)).astype(np.int64)
    out = []
    for row in x.numpy():
        hits = [o for o in np.flatnonzero(stream == row[0]) if np.array_equal(stream[o : o + len(row)], row)]
        assert len(hits) == 1
        out.append(int(hits[0]))
    return out


@pytest.fixture(scope="module")
def ds(small_dataset) -> Dataset:
    return Dataset.open(small_dataset, verify_sha256=True)


def test_dataset_properties(ds):
    assert ds.vocab_size == 300 and ds.dtype == np.dtype("uint16")
    assert ds.num_tokens("train") == len(ds.tokens("train")) > 2048
    assert len(ds.manifest["splits"]["train"]["shards"]) > 1
    assert ds.bytes_per_token("train") == ds.manifest["splits"]["train"]["bytes"] / ds.num_tokens("train")
    assert ds.tokenizer_path.is_file()


def test_token_view_matches_concatenated_shards(ds):
    view = ds.tokens("train")
    parts = [np.fromfile(ds.path / s["file"], dtype="<u2") for s in ds.manifest["splits"]["train"]["shards"]]
    whole = np.concatenate(parts)
    assert np.array_equal(np.asarray(view), whole)
    assert np.array_equal(view[1000:1100], whole[1000:1100])  # crosses the 1024-token shard boundary
    assert view[1500] == whole[1500] and view[-1] == whole[-1]


def test_batches_are_shifted_int64(ds):
    x, y = next(TokenLoader(ds, "train", batch_size=4, seq_len=16))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    offsets = window_offsets(ds, "train", x)
    stream = np.asarray(ds.tokens("train"))
    for row, o in zip(y.numpy(), offsets):
        assert np.array_equal(row, stream[o + 1 : o + 17])


def test_random_mode_is_deterministic_and_seeded(ds):
    a = take(TokenLoader(ds, "train", 4, 16, seed=3), 5)
    b = take(TokenLoader(ds, "train", 4, 16, seed=3), 5)
    c = take(TokenLoader(ds, "train", 4, 16, seed=4), 5)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_partition_the_single_process_stream(ds, world):
    b = 2
    single = take(TokenLoader(ds, "train", world * b, 8, seed=7), 4)
    ranks = [take(TokenLoader(ds, "train", b, 8, seed=7, rank=r, world_size=world), 4) for r in range(world)]
    for i in range(4):
        joined = torch.cat([ranks[r][i][0] for r in range(world)])
        assert torch.equal(joined, single[i][0])


def test_ranks_draw_disjoint_samples(ds):
    # Each rank takes a disjoint slice of every global batch: different windows, not a shared stream.
    loaders = [TokenLoader(ds, "train", 4, 32, seed=0, rank=r, world_size=2) for r in range(2)]
    offsets = [set(), set()]
    for _ in range(5):
        for r, loader in enumerate(loaders):
            offsets[r].update(int(o) for o in loader._offsets(loader.batch_index))
            next(loader)
    assert offsets[0] and offsets[1] and not offsets[0] & offsets[1]


def test_resume_gives_identical_next_batches(ds):
    loader = TokenLoader(ds, "train", 3, 12, seed=11, rank=1, world_size=2)
    take(loader, 7)
    state = json.loads(json.dumps(loader.state_dict()))  # must be JSON-serialisable
    expected = take(loader, 3)
    resumed = TokenLoader(ds, "train", 3, 12, seed=11, rank=1, world_size=2)
    resumed.load_state_dict(state)
    for (x1, y1), (x2, y2) in zip(expected, take(resumed, 3)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


def test_resume_at_another_world_size_with_same_global_batch(ds):
    one = TokenLoader(ds, "train", 4, 8, seed=2)
    take(one, 3)
    state = one.state_dict()
    nxt = next(one)[0]
    halves = []
    for r in range(2):
        loader = TokenLoader(ds, "train", 2, 8, seed=2, rank=r, world_size=2)
        loader.load_state_dict(state)
        halves.append(next(loader)[0])
    assert torch.equal(torch.cat(halves), nxt)


def test_resume_refuses_mismatched_state(ds):
    state = TokenLoader(ds, "train", 2, 8, seed=1).state_dict()
    with pytest.raises(DataError, match="seq_len"):
        TokenLoader(ds, "train", 2, 16, seed=1).load_state_dict(state)


@pytest.mark.parametrize("world, batch", [(1, 4), (2, 3), (3, 5)])
def test_sequential_covers_split_once(ds, world, batch):
    seq = 64
    n = ds.num_tokens("val")
    windows = []
    for r in range(world):
        loader = TokenLoader(ds, "val", batch, seq, rank=r, world_size=world)
        assert loader.mode == "sequential"
        got = list(loader)
        assert len(got) == len(loader)
        assert all(x.shape[0] == batch for x, _ in got[:-1]) and 0 < got[-1][0].shape[0] <= batch
        rows = torch.cat([x for x, _ in got])
        windows += list(zip(range(r, (n - 1) // seq, world), rows))
    windows.sort(key=lambda kv: kv[0])
    stream = torch.from_numpy(np.asarray(ds.tokens("val")).astype(np.int64))
    assert [k for k, _ in windows] == list(range((n - 1) // seq))
    covered = torch.cat([row for _, row in windows])
    assert torch.equal(covered, stream[: len(covered)])
    assert n - 1 - len(covered) < seq  # only a tail shorter than one window is left


def test_sequential_loader_restarts_when_iterated_again(ds):
    loader = TokenLoader(ds, "val", 4, 32)
    first, second = list(loader), list(loader)
    assert len(first) == len(second) > 0 and torch.equal(first[0][0], second[0][0])


def test_too_short_split_and_bad_args(ds):
    with pytest.raises(DataError, match="needs"):
        TokenLoader(ds, "val", 1, ds.num_tokens("val"))
    with pytest.raises(DataError, match="no split"):
        TokenLoader(ds, "test", 1, 8)
    with pytest.raises(DataError, match="rank"):
        TokenLoader(ds, "train", 1, 8, rank=2, world_size=2)
    with pytest.raises(DataError, match="mode"):
        TokenLoader(ds, "train", 1, 8, mode="shuffled")


def test_token_view_empty_and_slices():
    view = TokenView([np.arange(3, dtype="<u2"), np.array([], dtype="<u2"), np.arange(3, 6, dtype="<u2")])
    assert len(view) == 6 and list(view[2:5]) == [2, 3, 4] and len(view[5:2]) == 0
    with pytest.raises(IndexError):
        view[6]


# ---------------------------------------------------------------- verification


@pytest.fixture
def copy(small_dataset, tmp_path) -> Path:
    dst = tmp_path / "ds"
    shutil.copytree(small_dataset, dst)
    return dst


def edit_manifest(root: Path, **changes) -> None:
    path = root / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest.update(changes)
    path.write_text(json.dumps(manifest))


def test_missing_manifest_is_incomplete(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(DataError, match="incomplete: no manifest.json"):
        Dataset.open(copy)


def test_missing_dir(tmp_path):
    with pytest.raises(DataError, match="not found"):
        Dataset.open(tmp_path / "nope")


def test_wrong_version_refused(copy):
    edit_manifest(copy, version=99)
    with pytest.raises(DataError, match="version 99"):
        Dataset.open(copy)


def test_bad_dtype_refused(copy):
    edit_manifest(copy, dtype="float32")
    with pytest.raises(DataError, match="dtype"):
        Dataset.open(copy)


def test_truncated_shard_refused(copy):
    shard = copy / "shards" / "train-00000.bin"
    shard.write_bytes(shard.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        Dataset.open(copy)


def test_missing_shard_refused(copy):
    (copy / "shards" / "val-00000.bin").unlink()
    with pytest.raises(DataError, match="incomplete: shard"):
        Dataset.open(copy)


def test_sha256_checked_only_on_request(copy):
    shard = copy / "shards" / "train-00001.bin"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    Dataset.open(copy)  # sizes still match
    with pytest.raises(DataError, match="sha256"):
        Dataset.open(copy, verify_sha256=True)
