"""Read a dataset dir: memory-mapped token streams and a rank-aware, resumable batch loader.

Random mode (training) is a pure function of (seed, global sample index): global
batch i draws `world_size · batch_size` window offsets from a counter-based RNG
seeded with (seed, i), and rank r takes offsets [r·b, (r+1)·b). So W ranks with
batch b see exactly the windows one process with batch W·b sees, ranks never
overlap within a step, and resuming only needs i.

Sequential mode (evaluation) walks non-overlapping windows at offsets 0, T, 2T, …
once; window k goes to rank k mod W. The last tokens that do not fill a window
are not scored; the last batch may be smaller.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from clusterlm.data.shards import read_manifest, verify_files
from clusterlm.errors import DataError

MODES = ("random", "sequential")


def check_token_ids(windows: np.ndarray, vocab_size: int, where: str) -> None:
    """DataError if a window holds an id outside the vocabulary (an embedding lookup would fail with an
    IndexError); costs one pass over the batch, nothing next to the model's forward."""
    if windows.size and int(windows.max()) >= vocab_size:
        raise DataError(f"{where} holds token id {int(windows.max())}, outside the vocabulary of {vocab_size}; "
                        "the shards do not match the manifest (re-run 'clusterlm prepare')")


class TokenView:
    """The shards of one split as a single read-only sequence of token ids.

    Supports `len`, integer indexing, contiguous slices (returning numpy arrays,
    copied only when a slice crosses a shard boundary) and `np.asarray`.
    """

    def __init__(self, arrays: list[np.ndarray]):
        self.arrays = [a for a in arrays if a.size]
        self.starts = np.cumsum([0] + [a.size for a in self.arrays])
        self.dtype = arrays[0].dtype if arrays else np.dtype("<u2")

    def __len__(self) -> int:
        return int(self.starts[-1])

    @property
    def shape(self) -> tuple[int]:
        return (len(self),)

    def __getitem__(self, index: int | slice) -> Any:
        n = len(self)
        if isinstance(index, slice):
            start, stop, step = index.indices(n)
            if step != 1:
                raise IndexError("TokenView supports contiguous slices only")
            return self.window(start, max(0, stop - start))
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"token index {index} out of range for {n} tokens")
        k = int(np.searchsorted(self.starts, i, side="right")) - 1
        return self.arrays[k][i - self.starts[k]]

    def window(self, offset: int, length: int) -> np.ndarray:
        """Tokens [offset, offset + length) as one array."""
        if length == 0:
            return np.empty(0, dtype=self.dtype)
        k = int(np.searchsorted(self.starts, offset, side="right")) - 1
        local = offset - int(self.starts[k])
        first = self.arrays[k]
        if local + length <= first.size:
            return first[local : local + length]
        parts = [first[local:]]
        need = length - parts[0].size
        while need > 0:
            k += 1
            parts.append(self.arrays[k][:need])
            need -= parts[-1].size
        return np.concatenate(parts)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self.window(0, len(self)) if len(self.arrays) != 1 else np.asarray(self.arrays[0])
        return arr.astype(dtype) if dtype is not None else arr


class Dataset:
    """An opened, verified dataset dir (see `shards.py` for the layout)."""

    def __init__(self, path: Path, manifest: dict[str, Any]):
        self.path = path
        self.manifest = manifest
        self.vocab_size = int(manifest["vocab_size"])
        self.eos_id = int(manifest["eos_id"])
        self.pad_id = int(manifest["pad_id"])
        self.dtype = np.dtype(manifest["dtype"])
        self.tokenizer_path = path / manifest["tokenizer"].get("file", "tokenizer.json")
        self._views: dict[str, TokenView] = {}

    @classmethod
    def open(cls, path: str | Path, verify_sha256: bool = False) -> Dataset:
        """Open `path`; DataError if it is missing, incomplete (no manifest, missing or short shards) or corrupt."""
        root = Path(path)
        manifest = read_manifest(root)
        verify_files(root, manifest, sha256=verify_sha256)
        return cls(root, manifest)

    @property
    def splits(self) -> list[str]:
        return list(self.manifest["splits"])

    def _split(self, split: str) -> dict[str, Any]:
        try:
            return self.manifest["splits"][split]
        except KeyError:
            raise DataError(f"dataset {self.path} has no split '{split}' (has: {', '.join(self.splits)})") from None

    def num_tokens(self, split: str) -> int:
        return int(self._split(split)["tokens"])

    def num_bytes(self, split: str) -> int:
        return int(self._split(split)["bytes"])

    def bytes_per_token(self, split: str) -> float:
        """UTF-8 bytes of cleaned text per token (EOS separators counted as tokens)."""
        tokens = self.num_tokens(split)
        return self.num_bytes(split) / tokens if tokens else 0.0

    def tokens(self, split: str) -> TokenView:
        if split not in self._views:
            arrays = [
                np.memmap(self.path / s["file"], dtype=self.dtype, mode="r", shape=(int(s["tokens"]),))
                for s in self._split(split)["shards"]
                if int(s["tokens"]) > 0
            ]
            self._views[split] = TokenView(arrays)
        return self._views[split]


class TokenLoader:
    """Yields `(x, y)` int64 tensors of shape (batch_size, seq_len), `y` = `x` shifted by one token."""

    def __init__(
        self,
        dataset: Dataset | str | Path,
        split: str,
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        mode: str | None = None,
    ):
        self.dataset = dataset if isinstance(dataset, Dataset) else Dataset.open(dataset)
        self.split = split
        self.mode = mode or ("random" if split == "train" else "sequential")
        if self.mode not in MODES:
            raise DataError(f"loader mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if batch_size < 1 or seq_len < 1:
            raise DataError(f"batch_size and seq_len must be ≥ 1 (got {batch_size}, {seq_len})")
        if not 0 <= rank < world_size:
            raise DataError(f"rank {rank} is not in [0, world_size={world_size})")
        self.batch_size, self.seq_len, self.seed = batch_size, seq_len, seed
        self.rank, self.world_size = rank, world_size
        self.view = self.dataset.tokens(split)
        self.n_tokens = len(self.view)
        if self.n_tokens < seq_len + 1:
            raise DataError(
                f"split '{split}' of {self.dataset.path} has {self.n_tokens} tokens; a window of seq_len "
                f"{seq_len} needs {seq_len + 1} (lower seq_len or prepare more data)"
            )
        # Sequential: windows this rank owns are k = rank, rank + W, rank + 2W, …
        self.n_windows = (self.n_tokens - 1) // seq_len
        self.rank_windows = len(range(rank, self.n_windows, world_size))
        self.batch_index = 0  # batches this loader has produced (= global batch index in random mode)

    # ------------------------------------------------------------ iteration

    def __iter__(self) -> TokenLoader:
        if self.mode == "sequential" and self.batch_index >= len(self):
            self.batch_index = 0  # a finished pass restarts when iterated again
        return self

    def __len__(self) -> int:
        if self.mode == "random":
            raise TypeError("a random-mode TokenLoader is infinite")
        return -(-self.rank_windows // self.batch_size)

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        offsets = self._offsets(self.batch_index)
        if offsets.size == 0:
            raise StopIteration
        self.batch_index += 1
        windows = np.stack([self.view.window(int(o), self.seq_len + 1) for o in offsets]).astype(np.int64)
        check_token_ids(windows, self.dataset.vocab_size, f"split '{self.split}' of {self.dataset.path}")
        batch = torch.from_numpy(windows)
        return batch[:, :-1], batch[:, 1:]

    def _offsets(self, i: int) -> np.ndarray:
        b, w = self.batch_size, self.world_size
        if self.mode == "random":
            rng = np.random.default_rng([self.seed, i])
            # The whole global batch is drawn so every rank's slice matches the 1-rank stream.
            offsets = rng.integers(0, self.n_tokens - self.seq_len, size=w * b)
            return offsets[self.rank * b : (self.rank + 1) * b]
        first = i * b
        local = np.arange(first, min(first + b, self.rank_windows), dtype=np.int64)
        return (self.rank + local * w) * self.seq_len

    # ------------------------------------------------------------ resume

    def state_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "mode": self.mode,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "rank": self.rank,
            "batch_index": self.batch_index,
            # Samples consumed by all ranks together: what a resume at another world size keeps.
            "samples_seen": self.batch_index * self.batch_size * (self.world_size if self.mode == "random" else 1),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where `state` was taken (same global batch size ⇒ identical next batch)."""
        _check_state(state)
        for key in ("split", "mode", "seed", "seq_len"):
            if key in state and state[key] != getattr(self, key):
                raise DataError(
                    f"loader state is for {key}={state[key]!r} but this loader has {key}={getattr(self, key)!r}"
                )
        index = int(state["batch_index"])
        if self.mode == "random":
            global_batch = self.batch_size * self.world_size
            saved = int(state.get("batch_size", self.batch_size)) * int(state.get("world_size", self.world_size))
            if saved != global_batch:
                # Another global batch size: continue after the samples already seen (rounded up).
                index = -(-int(state.get("samples_seen", index * saved)) // global_batch)
        elif (int(state.get("world_size", self.world_size)), int(state.get("rank", self.rank))) != (
            self.world_size, self.rank
        ) or int(state.get("batch_size", self.batch_size)) != self.batch_size:
            raise DataError("sequential loader state can only be restored with the same rank, world size and batch")
        self.batch_index = index


_STATE_INTS = ("seed", "seq_len", "batch_size", "world_size", "rank", "batch_index", "samples_seen")


def _check_state(state: Any) -> None:
    """A saved loader state has the fields `state_dict` writes, with their types (DataError otherwise)."""
    if not isinstance(state, dict) or "batch_index" not in state:
        raise DataError("loader state is malformed (no batch_index)")
    for key in ("split", "mode"):
        if key in state and not isinstance(state[key], str):
            raise DataError(f"loader state field '{key}' must be a string, got {state[key]!r}")
    for key in _STATE_INTS:
        value, low = state.get(key, 1), 1 if key in ("seq_len", "batch_size", "world_size") else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"loader state field '{key}' must be an integer ≥ {low}, got {value!r}")
    if state.get("mode", "random") not in MODES:
        raise DataError(f"loader state field 'mode' must be one of {', '.join(MODES)}, got {state['mode']!r}")
