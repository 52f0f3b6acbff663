from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import pytest

from clusterlm.config.data import CleanConfig, DataConfig
from clusterlm.data.bpe_process import train_tokenizer_in_subprocess
from clusterlm.data.loader import Dataset
from clusterlm.data.owner_lock import LOCK_NAME, OwnerLock
from clusterlm.data.prepare import prepare_dataset
from clusterlm.data.shards import ShardWriter, file_sha256, token_dtype
from clusterlm.data.tokenizer import MAX_PIECE_CHARS, load_tokenizer, new_bpe_tokenizer
from clusterlm.errors import DataError, OutputExistsError

from datahelp import write_corpus


def cfg(corpus: Path, **kw) -> DataConfig:
    kw.setdefault("vocab_size", 300)
    kw.setdefault("val_fraction", 0.2)
    return DataConfig(inputs=[str(corpus)], **kw)


def decoded_documents(out: Path, split: str) -> list[str]:
    ds = Dataset.open(out)
    tok = load_tokenizer(ds.tokenizer_path)
    ids = np.asarray(ds.tokens(split)).tolist()
    docs, cur = [], []
    for i in ids:
        if i == ds.eos_id:
            docs.append(tok.decode(cur, skip_special_tokens=False))
            cur = []
        else:
            cur.append(i)
    assert cur == []  # every document ends with EOS
    return docs


def test_manifest_layout_and_hashes(small_dataset):
    manifest = json.loads((small_dataset / "manifest.json").read_text())
    assert manifest["format"] == "clusterlm-dataset" and manifest["version"] == 1
    assert manifest["config"]["vocab_size"] == 300 and manifest["config"]["clean"]["min_chars"] == 32
    assert manifest["dtype"] == "uint16" and manifest["eos_id"] == 0 and manifest["pad_id"] == 1
    assert manifest["tokenizer"]["sha256"] == file_sha256(small_dataset / "tokenizer.json")
    for name in ("train", "val"):
        split = manifest["splits"][name]
        assert len(split["shards"]) >= 1
        assert sum(s["tokens"] for s in split["shards"]) == split["tokens"]
        for i, shard in enumerate(split["shards"]):
            assert shard["file"] == f"shards/{name}-{i:05d}.bin"
            path = small_dataset / shard["file"]
            assert path.stat().st_size == 2 * shard["tokens"]
            assert file_sha256(path) == shard["sha256"]
        assert all(s["tokens"] == 1024 for s in split["shards"][:-1])  # shard_tokens
        assert split["bytes"] > split["tokens"] > 0
    report = json.loads((small_dataset / "report.json").read_text())
    assert report == manifest["report"]
    assert report["documents"]["in"] == report["documents"]["kept"] == 60
    assert report["bytes_per_token"] > 1


def test_documents_roundtrip_and_split_by_content(tmp_path, corpus_dir):
    out = tmp_path / "ds"
    prepare_dataset(cfg(corpus_dir), out)
    originals = {p.read_text() for p in corpus_dir.rglob("*.txt")}
    train, val = decoded_documents(out, "train"), decoded_documents(out, "val")
    assert set(train) | set(val) == originals and not set(train) & set(val)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["splits"]["val"]["bytes"] == sum(len(d.encode()) for d in val)
    # The split is a function of content + seed: renaming files does not move documents.
    moved = tmp_path / "moved"
    for i, p in enumerate(sorted(corpus_dir.rglob("*.txt"), reverse=True)):
        (moved / f"{i}.txt").parent.mkdir(parents=True, exist_ok=True)
        (moved / f"{i}.txt").write_text(p.read_text())
    prepare_dataset(cfg(moved, tokenizer=str(out / "tokenizer.json")), tmp_path / "ds2")
    assert set(decoded_documents(tmp_path / "ds2", "val")) == set(val)
    # Another seed gives another split.
    prepare_dataset(cfg(corpus_dir, seed=1, tokenizer=str(out / "tokenizer.json")), tmp_path / "ds3")
    assert set(decoded_documents(tmp_path / "ds3", "val")) != set(val)


def test_exact_duplicates_dropped_and_reported(tmp_path, corpus_dir):
    (corpus_dir / "copy.txt").write_text((corpus_dir / "part0" / "doc000.txt").read_text())
    report = prepare_dataset(cfg(corpus_dir), tmp_path / "ds")
    assert report["documents"]["dropped"] == {"duplicate": 1}
    assert report["documents"]["kept"] == 40
    assert len(report["documents"]["dropped_examples"]["duplicate"]) == 1
    no_dedup = prepare_dataset(cfg(corpus_dir, clean=CleanConfig(dedup=False)), tmp_path / "ds2")
    assert no_dedup["documents"]["kept"] == 41


def test_output_identical_for_any_worker_count(tmp_path, corpus_dir):
    # Tokenizer training and encoding both run in the worker processes with workers=2.
    a = prepare_dataset(cfg(corpus_dir, workers=1), tmp_path / "w1")
    b = prepare_dataset(cfg(corpus_dir, workers=2), tmp_path / "w2")
    assert a["tokens"] == b["tokens"]
    m1 = json.loads((tmp_path / "w1" / "manifest.json").read_text())
    m2 = json.loads((tmp_path / "w2" / "manifest.json").read_text())
    assert m1["tokenizer"]["sha256"] == m2["tokenizer"]["sha256"]
    for split in ("train", "val"):
        assert [s["sha256"] for s in m1["splits"][split]["shards"]] == [
            s["sha256"] for s in m2["splits"][split]["shards"]
        ]


def test_refuses_existing_output_unless_overwrite(tmp_path, corpus_dir):
    out = tmp_path / "ds"
    out.mkdir()
    prepare_dataset(cfg(corpus_dir), out)  # an empty dir is fine
    stamp = (out / "manifest.json").stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--overwrite"):
        prepare_dataset(cfg(corpus_dir), out)
    assert (out / "manifest.json").stat().st_mtime_ns == stamp
    prepare_dataset(cfg(corpus_dir, seed=5), out, overwrite=True)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left behind


def test_nothing_left_after_cleaning(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("tiny")
    with pytest.raises(DataError, match="nothing left after cleaning"):
        prepare_dataset(cfg(tmp_path / "in"), tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_failure_leaves_no_output_or_temp(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("tiny")
    with pytest.raises(DataError):
        prepare_dataset(cfg(tmp_path / "in", tokenizer=str(tmp_path / "missing.json")), tmp_path / "ds")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]


def test_max_input_mb_caps_reading(tmp_path):
    corpus = write_corpus(tmp_path / "c", n_docs=20, n_words=400)  # ~2.5 kB each
    report = prepare_dataset(cfg(corpus, max_input_mb=0.01), tmp_path / "ds")
    assert 10_000 <= report["bytes"]["input"] < 10_000 + 4_000
    assert report["documents"]["in"] < 20


def test_tokenizer_sample_mb_limits_training_text(tmp_path):
    corpus = write_corpus(tmp_path / "c", n_docs=40, n_words=400)
    report = prepare_dataset(cfg(corpus, tokenizer_sample_mb=0.02), tmp_path / "ds")
    tok = report["tokenizer"]
    assert tok["trained"] and 0 < tok["sample_bytes"] < report["bytes"]["kept"] / 2
    assert report["documents"]["kept"] == 40  # sampling affects training only


def test_reused_tokenizer_gets_special_tokens_and_uint32_for_large_vocab(tmp_path, corpus_dir):
    from tokenizers import pre_tokenizers, trainers

    # A BPE trained without special tokens, padded past 65,535 ids with plain added tokens.
    tok = new_bpe_tokenizer()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["# document " * 20], trainer=trainer)
    tok.add_tokens([f"zq{i}zq" for i in range(66_000)])
    tok.save(str(tmp_path / "big.json"))
    report = prepare_dataset(cfg(corpus_dir, tokenizer=str(tmp_path / "big.json")), tmp_path / "ds")
    ds = Dataset.open(tmp_path / "ds", verify_sha256=True)
    assert ds.vocab_size > 65_535 and ds.dtype == np.dtype("uint32")
    assert ds.eos_id >= 66_000 and report["tokenizer"]["trained"] is False
    assert decoded_documents(tmp_path / "ds", "train")[0].startswith("# document")


def test_literal_eos_text_is_not_a_separator(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.txt").write_text("a document that mentions <|endoftext|> in its text body")
    prepare_dataset(cfg(tmp_path / "in", val_fraction=0.0), tmp_path / "ds")
    ds = Dataset.open(tmp_path / "ds")
    assert np.count_nonzero(np.asarray(ds.tokens("train")) == ds.eos_id) == 1


@pytest.mark.timeout(60)
def test_stale_temps_removed_only_when_their_owner_is_dead(tmp_path, corpus_dir):
    def temp(name: str, owner: dict | None = None, legacy_pid: bool = False) -> Path:
        path = tmp_path / f".ds.{name}.tmp"
        path.mkdir()
        if owner is not None:
            (path / LOCK_NAME).write_text(json.dumps(owner))
        if legacy_pid:
            (path / ".prepare-pid").write_text("12345")
        return path

    here = socket.gethostname()
    dead = temp("dead", {"host": here, "pid": 999_999_999, "start_time": 0.0})
    other = temp("other", {"host": "node-17.cluster", "pid": 999_999_999, "start_time": 0.0})
    alive = temp("alive")
    lock = OwnerLock(alive).acquire()  # this process: a live owner on this host
    old_unowned, legacy = temp("unowned"), temp("legacy", legacy_pid=True)
    for path in (old_unowned, legacy):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    try:
        report = prepare_dataset(cfg(corpus_dir), tmp_path / "ds")
    finally:
        lock.release()
    assert not dead.exists() and not old_unowned.exists()
    assert other.exists() and alive.exists() and legacy.exists()
    assert sum("node-17.cluster" in w for w in report["warnings"]) == 1
    assert sum(str(legacy) in w for w in report["warnings"]) == 1
    assert not (tmp_path / "ds" / LOCK_NAME).exists()  # the owner's lock is no part of the output


@pytest.mark.timeout(60)
def test_hostile_inputs_are_counted_in_the_report(tmp_path, corpus_dir):
    bad = corpus_dir / "bad"
    bad.mkdir()
    os.mkfifo(bad / "pipe.txt")
    (bad / "loop.txt").symlink_to(bad / "loop.txt")
    (bad / "up").symlink_to(corpus_dir)
    records = ["[" * 200_000 + "]" * 200_000, '{"text": "a lone surrogate \\ud800 in a record long enough to keep"}',
               "{broken", json.dumps({"text": "long " * 100_000})]
    (bad / "records.jsonl").write_text("\n".join(records) + "\n")
    report = prepare_dataset(cfg(corpus_dir, max_line_mb=0.45), tmp_path / "ds")
    dropped = report["documents"]["dropped"]
    for reason in ("fifo", "symlink_loop", "jsonl_too_deep", "lone_surrogate", "malformed_jsonl", "line_too_long"):
        assert dropped.get(reason) == 1, (reason, dropped)
    assert report["files"]["skipped"] == {"symlinked_dir": 1}
    assert report["documents"]["kept"] == 40
    assert any("data.max_line_mb" in w for w in report["warnings"])
    assert json.loads((tmp_path / "ds" / "report.json").read_text())["documents"]["dropped"] == dropped


@pytest.mark.timeout(60)
def test_only_special_files_is_one_clear_error(tmp_path):
    (tmp_path / "in").mkdir()
    os.mkfifo(tmp_path / "in" / "pipe.txt")
    with pytest.raises(DataError, match=r"all dropped \(fifo 1\)"):
        prepare_dataset(cfg(tmp_path / "in"), tmp_path / "ds")
    with pytest.raises(DataError, match=r"all dropped \(device 1\)"):
        prepare_dataset(DataConfig(inputs=["/dev/zero"], vocab_size=300), tmp_path / "ds")


@pytest.mark.timeout(60)
def test_training_leaves_the_environment_alone(tmp_path, corpus_dir, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    before = dict(os.environ)
    seen = []

    def texts():  # consumed while the child trains: our environment must be untouched meanwhile
        for path in sorted(corpus_dir.rglob("*.txt")):
            seen.append(os.environ.get("TOKENIZERS_PARALLELISM"))
            yield path.read_text()

    tok = train_tokenizer_in_subprocess(texts(), 300)
    assert tok.get_vocab_size() > 256 and seen and set(seen) == {"true"}
    prepare_dataset(cfg(corpus_dir), tmp_path / "ds")
    assert dict(os.environ) == before


def test_shard_writer_rolls_over_and_hashes(tmp_path):
    writer = ShardWriter(tmp_path, "train", token_dtype(70_000), shard_tokens=5)
    writer.append(np.arange(7))
    writer.append(np.arange(7, 12))
    shards = writer.close()
    assert [s["tokens"] for s in shards] == [5, 5, 2]
    data = b"".join((tmp_path / s["file"]).read_bytes() for s in shards)
    assert np.array_equal(np.frombuffer(data, dtype="<u4"), np.arange(12))
    assert all(file_sha256(tmp_path / s["file"]) == s["sha256"] for s in shards)
    assert token_dtype(65_535) == np.dtype("uint16") and token_dtype(65_536) == np.dtype("uint32")


def test_tokenizer_piece_cap_reaches_training(tmp_path, corpus_dir):
    def longest_token(**kw) -> int:
        out = tmp_path / f"ds{len(kw)}"
        prepare_dataset(cfg(corpus_dir, **kw), out)
        vocab = load_tokenizer(out / "tokenizer.json").get_vocab()
        return max(len(t) for t in vocab if not t.startswith("<|"))

    assert longest_token(tokenizer_max_piece_chars=2) == 2  # no merge can span a cut
    assert longest_token() > 2
    assert DataConfig().tokenizer_max_piece_chars == MAX_PIECE_CHARS
