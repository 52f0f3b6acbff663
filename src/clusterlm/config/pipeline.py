"""Pipeline stage splits: how many transformer layers each (virtual) pipeline stage holds.

Real runs do not always divide the layers evenly:

* **even** — L/(p·v) layers per virtual stage (Megatron-LM's default); needs divisibility.
* **balanced** — the embedding and the output layer + loss each count as one layer-equivalent:
  the first and last stages hold one layer fewer than the others when L + 2 divides (p·v)
  (Megatron-LM's `--account-for-embedding-in-pipeline-split --account-for-loss-in-pipeline-split`,
  DeepSpeed's `--pp-partition-method type:transformer|embedding` as BLOOM-176B used it, and
  Llama 3 405B's "one Transformer layer fewer on the first and the last stage": 126 layers over
  16 stages = 7, 8, …, 8, 7). When L + 2 does not divide, the remainder goes to middle stages.
* **auto** (the default) — even when it divides, balanced otherwise.
* an explicit list (`--stage-layers 7,8,…,8,7`) with one entry per virtual stage in pipeline
  order; the first and last entries may be 0 (embedding or loss alone on a stage).

With interleaving (v > 1) virtual stage k sits on device k mod p (Megatron-LM's assignment), so
device i holds chunks i, i + p, i + 2p, …; the embedding is on device 0, the output layer and the
loss on device p − 1.
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterlm.errors import ConfigError

SPLITS = ("auto", "even", "balanced")


@dataclass(frozen=True)
class StageSplit:
    chunks: tuple[int, ...]  # layers per virtual stage, pipeline order (p·v entries)
    pp: int
    rule: str  # "even" | "balanced" | "explicit"

    @property
    def device_layers(self) -> tuple[int, ...]:
        """Layers held by each physical pipeline stage (device)."""
        return tuple(sum(self.chunks[i :: self.pp]) for i in range(self.pp))

    def describe(self) -> str:
        return ",".join(str(c) for c in self.chunks)


def split_layers(n_layer: int, pp: int, interleave: int = 1, rule: str = "auto",
                 explicit: tuple[int, ...] | None = None) -> StageSplit:
    """The layer count of every virtual stage, or ConfigError saying what to change."""
    n = pp * interleave
    if explicit is not None:
        return _explicit(n_layer, pp, interleave, tuple(explicit))
    if rule not in SPLITS:
        raise ConfigError(f"pipeline split must be one of {', '.join(SPLITS)}, got '{rule}'")
    if rule == "even" or (rule == "auto" and n_layer % n == 0):
        if n_layer % n:
            what = f"p·v={pp}·{interleave}" if interleave > 1 else f"p={pp}"
            raise ConfigError(f"layers ({n_layer}) are not divisible by pipeline stages {what}; use "
                              "--pipeline-split balanced or an explicit --stage-layers list")
        return StageSplit((n_layer // n,) * n, pp, "even")
    return _balanced(n_layer, pp, interleave)


def _balanced(n_layer: int, pp: int, interleave: int) -> StageSplit:
    n = pp * interleave
    if n == 1:
        return StageSplit((n_layer,), pp, "balanced")
    units = n_layer + 2  # embedding and output layer + loss count as one layer each
    base, extra = divmod(units, n)
    sizes = [base] * n
    middle = list(range(1, n - 1)) or list(range(n))
    for i in range(extra):  # the remainder goes to middle stages, which have no edge work
        sizes[middle[i % len(middle)]] += 1
    sizes[0] -= 1
    sizes[-1] -= 1
    if min(sizes) < 0 or min(sizes[1:-1] or [1]) < 1:
        raise ConfigError(f"{n_layer} layers are too few for {n} pipeline stages; use fewer stages")
    return StageSplit(tuple(sizes), pp, "balanced")


def _explicit(n_layer: int, pp: int, interleave: int, chunks: tuple[int, ...]) -> StageSplit:
    n = pp * interleave
    if len(chunks) != n:
        raise ConfigError(f"the stage split (--stage-layers, parallel.pp_stage_layers) has {len(chunks)} entries but there are p·v = {pp}·{interleave} = "
                          f"{n} pipeline stages (one entry per virtual stage, in pipeline order)")
    if sum(chunks) != n_layer:
        raise ConfigError(f"the stage split (--stage-layers, parallel.pp_stage_layers) sums to {sum(chunks)} layers but the model has {n_layer}")
    inner = chunks[1:-1]
    if min(chunks) < 0 or (inner and min(inner) < 1):
        raise ConfigError("--stage-layers entries must be ≥ 1 (only the first and last stage may be 0, "
                          "holding just the embedding or the output layer)")
    return StageSplit(chunks, pp, "explicit")


def parse_stage_layers(text: str) -> tuple[int, ...]:
    """`7,8,8,7` → (7, 8, 8, 7)."""
    try:
        return tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"--stage-layers: expected comma-separated integers like 7,8,8,7, got '{text}'") from None
