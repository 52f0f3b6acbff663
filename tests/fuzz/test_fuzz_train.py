"""Malformed `clusterlm train` input: config values, parallel degrees, devices, output paths, a run
dir in use or left over, tampered checkpoints and datasets. Each is one `error:` line, exit 2, and
leaves the run dir byte for byte as it was (a fresh `train.out_dir` is not even created)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest
import torch
from fuzzhelp import TINY, assert_one_error, run_cli, tree_sha256

from clusterlm.checkpoint.runlock import RunLock

pytestmark = pytest.mark.timeout(60)

# (overrides, words the error line must hold); each runs against a fresh out_dir
CONFIG_CASES = [
    (["parallel.tp=4"], "world size 1"), (["parallel.pp=2"], "world size 1"),
    (["parallel.dp_shard=0"], "dp_shard"), (["parallel.dp_replicate=1000000"], "world size 1"),
    (["parallel.dp_replicate=2000000"], "parallel.dp_replicate"), (["parallel.tp=0"], "parallel.tp"),
    (["parallel.timeout_s=inf"], "finite"), (["parallel.pp_virtual_stages=2"], "pp"),
    (["train.device=mps"], "mps"), (["train.device=cuda:7"], "train.device"), (["train.device=gpu"], "train.device"),
    (["train.seed=100000000000000000000000"], "train.seed"), (["train.seed=-1"], "train.seed"),
    (["train.seed=1.5"], "train.seed"), (["model.init_std=-1"], "model.init_std"),
    (["model.init_std=0"], "model.init_std"), (["model.style=llama", "model.rope_theta=0"], "model.rope_theta"),
    (["model.rope_theta=nan"], "finite"), (["model.max_seq_len=10000000000"], "model.max_seq_len"),
    (["model.d_model=100000", "model.n_head=1"], "GiB"), (["model.n_layer=0"], "model.n_layer"),
    (["model.n_layer=100000"], "model.n_layer"), (["model.vocab_size=1"], "model.vocab_size"),
    (["model.dropout=1.5"], "model.dropout"), (["model.norm_eps=0"], "model.norm_eps"),
    (["model.n_head=3"], "divisible"), (["train.lr=nan"], "finite"), (["train.lr=inf"], "finite"),
    (["train.lr=-1"], "train.lr"), (["train.lr=1e30"], "train.lr"), (["train.max_minutes=nan"], "finite"),
    (["train.max_minutes=0"], "train.max_minutes"), (["train.micro_batch=0"], "train.micro_batch"),
    (["train.micro_batch=100000000"], "train.micro_batch"), (["train.seq_len=0"], "train.seq_len"),
    (["train.seq_len=128"], "max_seq_len"), (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["train.batch_size=3"], "multiple"), (["train.eval_every=0"], "train.eval_every"),
    (["train.beta2=1"], "train.beta2"), (["train.eps=0"], "train.eps"), (["train.grad_clip=-inf"], "train.grad_clip"),
    (["train.max_steps=1e400"], "train.max_steps"), (["train.precision=fp8"], "train.precision"),
    (["train.no_such_key=1"], "unknown config key"), (["data.dir={root}/missing"], "not found"),
    (["data.dir={root}/a-file"], "not a directory"), (["train.init_from={root}/missing"], "does not exist"),
]


@pytest.mark.parametrize("overrides, words", CONFIG_CASES, ids=[" ".join(c[0]) for c in CONFIG_CASES])
def test_bad_config_values_are_one_line_and_create_nothing(ws, capfd, overrides, words):
    out = ws / "never"
    argv = [*TINY, f"data.dir={ws / 'data'}", f"train.out_dir={out}", *[o.format(root=ws) for o in overrides]]
    code, _, err = run_cli(capfd, "train", *argv, "--quiet")
    assert_one_error(code, err, words)
    assert not out.exists()


@pytest.mark.parametrize("out_dir, words", [
    ("{root}/a-file/run", "not a directory"), ("{root}/a-file", "is a file, not a directory"),
])
def test_out_dir_under_or_at_a_file(ws, capfd, out_dir, words):
    before = tree_sha256(ws / "a-file")
    code, _, err = run_cli(capfd, "train", *TINY, f"data.dir={ws / 'data'}", f"train.out_dir={out_dir.format(root=ws)}",
                           "--quiet")
    assert_one_error(code, err, words, str(ws / "a-file"))
    assert tree_sha256(ws / "a-file") == before


def _train(capfd, ws, run, *extra):
    """`clusterlm train` on `run`; `extra`: overrides, then flags."""
    overrides = [e for e in extra if not e.startswith("--")]
    flags = [e for e in extra if e.startswith("--")]
    return run_cli(capfd, "train", *TINY, f"data.dir={ws / 'data'}", f"train.out_dir={run}", *overrides, "--quiet",
                   *flags)


def test_a_second_trainer_on_a_live_run_dir_is_refused_naming_the_holder(ws, capfd, tmp_path):
    run = shutil.copytree(ws / "gpt", tmp_path / "run")
    with RunLock(run) as holder:  # a trainer of this process holds it
        before = tree_sha256(run)
        code, _, err = _train(capfd, ws, run, "train.max_steps=6")
        assert_one_error(code, err, "in use by another trainer", f"pid {holder.holder.pid}", "train.lock")
        assert tree_sha256(run) == before


def test_leftovers_of_a_run_without_checkpoints_are_not_overwritten(ws, capfd, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("someone's config\n")
    (run / "metrics.jsonl").write_text('{"kind": "train", "step": 1}\n')
    before = tree_sha256(run)
    code, _, err = _train(capfd, ws, run)
    assert_one_error(code, err, "config.yaml", "metrics.jsonl", "--overwrite")
    assert tree_sha256(run) == before
    code, _, err = _train(capfd, ws, run, "--overwrite", "--resume")
    assert code == 2 and "not allowed with argument" in err  # the two contradict each other
    assert _train(capfd, ws, run, "--overwrite")[0] == 0
    assert (run / "latest").read_text().strip() == "step-0000004"


def test_stale_temporaries_are_cleaned_on_start(ws, capfd, tmp_path):
    run = shutil.copytree(ws / "gpt", tmp_path / "run")
    leftovers = [run / "checkpoints" / ".step-0000006.tmp", run / ".latest.abc123.tmp", run / ".config.yaml.x1.tmp"]
    leftovers[0].mkdir()
    for path in leftovers[1:]:
        path.write_text("half")
    assert _train(capfd, ws, run, "train.max_steps=6")[0] == 0
    assert not any(p.exists() for p in leftovers)


def _tamper_pt(run, edit):
    path = run / "checkpoints" / "step-0000004" / "train_state.pt"
    state = torch.load(path, weights_only=True)
    result = edit(state, path)
    if result is not None:
        torch.save(result, path)


def _first_moments(state):
    return next(iter(state["optimizer"]["state"].values()))


PT_CASES = {
    "schedule garbage": (lambda s, p: s["schedule"].update(decay_start="abc") or s, "decay_start"),
    "schedule out of range": (lambda s, p: s["schedule"].update(decay_start=7.5) or s, "decay_start"),
    "step negative": (lambda s, p: s["train"].update(step=-1) or s, "'step'"),
    "step of another checkpoint": (lambda s, p: s["train"].update(step=2) or s, "step 2"),
    "step a string": (lambda s, p: s["train"].update(step="4") or s, "'step'"),
    "elapsed nan": (lambda s, p: s["train"].update(elapsed_s=float("nan")) or s, "elapsed_s"),
    "unknown field": (lambda s, p: s["train"].update(extra=1) or s, "unknown field"),
    "log window garbage": (lambda s, p: s["train"].update(log_window=[[1.0]]) or s, "log_window"),
    "loader index negative": (lambda s, p: s["loader"].update(batch_index=-5) or s, "batch_index"),
    "loader seed changed": (lambda s, p: s["loader"].update(seed=7) or s, "seed"),
    "rng wrong tensor": (lambda s, p: s["rng"].update(torch=torch.zeros(3)) or s, "rng"),
    "rng python garbage": (lambda s, p: s["rng"].update(python=[1, 2]) or s, "rng"),
    "optimizer groups swapped": (lambda s, p: s["optimizer"].update(param_groups=s["optimizer"]["param_groups"][::-1])
                                 or s, "parameter groups"),
    "optimizer moment shape": (lambda s, p: _first_moments(s).update(exp_avg=torch.zeros(7)) or s, "shape"),
    "optimizer moment nan": (lambda s, p: (_first_moments(s)["exp_avg_sq"].fill_(float("nan")), s)[1], "non-finite"),
    "optimizer eps nan": (lambda s, p: [g.update(eps=float("nan")) for g in s["optimizer"]["param_groups"]] and s,
                          "hyperparameters"),
    "optimizer extra param": (lambda s, p: s["optimizer"]["param_groups"][0]["params"].append(99) or s, "optimizer"),
    "not a mapping": (lambda s, p: [1, 2, 3], "does not hold a train state"),
    "a state missing": (lambda s, p: {k: v for k, v in s.items() if k != "loader"}, "lacks state for: loader"),
    "truncated": (lambda s, p: p.write_bytes(p.read_bytes()[:100]) and None, "corrupted"),
    "disguised pickle": (lambda s, p: p.write_bytes(pickle.dumps(print)) and None, "corrupted"),
}


@pytest.mark.parametrize("case", list(PT_CASES))
def test_tampered_train_state_pt_never_resumes(ws, capfd, tmp_path, case):
    edit, words = PT_CASES[case]
    run = shutil.copytree(ws / "gpt", tmp_path / "run")
    _tamper_pt(run, edit)
    before = tree_sha256(run)
    code, _, err = _train(capfd, ws, run, "train.max_steps=6")
    assert_one_error(code, err, words)
    assert tree_sha256(run) == before


def _tamper_dcp(run, case):
    ckpt = run / "checkpoints" / "step-0000004"
    if case == "index garbage":
        (ckpt / "dcp" / ".metadata").write_bytes(b"garbage")
    elif case == "shard truncated":
        shard = next((ckpt / "dcp").glob("*.distcp"))
        shard.write_bytes(shard.read_bytes()[:100])
    elif case == "json not json":
        (ckpt / "train_state.json").write_text("{")
    else:
        state = json.loads((ckpt / "train_state.json").read_text())
        state["schedule"]["decay_start"] = "x"
        (ckpt / "train_state.json").write_text(json.dumps(state))


@pytest.mark.parametrize("case, words", [("index garbage", ".metadata"), ("shard truncated", "cannot load"),
                                         ("json not json", "train_state.json"), ("schedule garbage", "decay_start")])
def test_tampered_dcp_checkpoints_never_resume_and_print_one_line(ws, capfd, tmp_path, case, words):
    run = shutil.copytree(ws / "dcp", tmp_path / "run")
    _tamper_dcp(run, case)
    before = tree_sha256(run)
    code, _, err = _train(capfd, ws, run, "train.max_steps=6")
    assert_one_error(code, err, words)
    assert tree_sha256(run) == before


def _shard(data):
    return data / "shards" / "train-00000.bin"


@pytest.mark.parametrize("fix_manifest", [False, True], ids=["hash mismatch", "out-of-vocabulary ids"])
def test_a_bad_shard_is_caught_on_first_use(ws, capfd, tmp_path, fix_manifest):
    data = tmp_path / "data"
    shutil.copytree(ws / "data", data)
    ids = np.fromfile(_shard(data), dtype=np.uint16)
    ids[len(ids) // 2] = 60000  # a token id far outside the 300-token vocabulary
    ids.tofile(_shard(data))
    if fix_manifest:  # the manifest vouches for the bad shard: only the id check can catch it
        import hashlib

        manifest = json.loads((data / "manifest.json").read_text())
        manifest["splits"]["train"]["shards"][0]["sha256"] = hashlib.sha256(_shard(data).read_bytes()).hexdigest()
        (data / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(capfd, "train", *TINY, f"data.dir={data}", f"train.out_dir={tmp_path / 'run'}", "--quiet")
    assert_one_error(code, err, "60000" if fix_manifest else "sha256", "train-00000.bin")
    assert not (tmp_path / "run").exists()
    if fix_manifest:  # eval reads windows through the loader, which refuses the id instead of an IndexError
        code, _, err = run_cli(capfd, "eval", ws / "gpt", "--data", data, "--split", "train", "--batches", "0")
        assert_one_error(code, err, "60000", "vocabulary")


def test_the_dataset_verification_is_recorded_in_the_run_dir(ws, tmp_path, monkeypatch):
    import os

    import clusterlm.train.rundir as rundir
    from clusterlm.data.loader import Dataset
    from clusterlm.runtime.process import Process

    record = json.loads((ws / "gpt" / "dataset_verified.json").read_text())  # written by the first run
    assert record["dataset"] == str((ws / "data").resolve()) and "shards/train-00000.bin" in record["shards"]
    data = tmp_path / "data"
    shutil.copytree(ws / "data", data)
    verified = []
    monkeypatch.setattr(rundir, "verify_files", lambda *a, **k: verified.append(a[0]))
    dataset, run = Dataset.open(data), tmp_path / "run"
    run.mkdir()
    rundir.write_verification(run, rundir.verify_dataset_once(dataset, run, Process()))
    assert rundir.verify_dataset_once(dataset, run, Process()) is None  # recorded: not read again
    stat = _shard(data).stat()
    os.utime(_shard(data), ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the shard was rewritten
    assert rundir.verify_dataset_once(dataset, run, Process()) is not None
    assert verified == [data, data]


def test_the_other_ranks_refuse_to_start_when_rank_0_cannot_take_the_run_dir(tmp_path):
    from clusterlm.checkpoint.store import CheckpointStore
    from clusterlm.errors import DistributedError
    from clusterlm.runtime.collectives import Collectives
    from clusterlm.runtime.process import Process
    from clusterlm.train.rundir import claim_run_dir

    class FromRank0(Collectives):
        """Rank 1 of 2, receiving rank 0's outcome."""

        def __init__(self, outcome):
            super().__init__(rank=1, world_size=2)
            self.outcome = outcome

        def broadcast_object(self, obj, src=0):
            return self.outcome

    store = CheckpointStore(tmp_path / "run", keep_last=1, is_main=False)
    held = "run is in use by another trainer: pid 7 on node-3"
    with pytest.raises(DistributedError, match="rank 0 could not take the run dir: run is in use .* node-3"):
        claim_run_dir(store, Process(rank=1, world_size=2, collectives=FromRank0(held)))
    assert claim_run_dir(store, Process(rank=1, world_size=2, collectives=FromRank0(None))) is None
    assert not (tmp_path / "run").exists()  # only rank 0 touches the run dir
