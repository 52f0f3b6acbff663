"""The ranges every numeric config key must lie in, in one place (docs/training.md lists them
under "Limits and validation rules").

Lower bounds say what makes sense at all (a size ≥ 1, a learning rate > 0); upper bounds are far
above every published model (GPT-3 has d_model 12,288 and a 2,048 context; Llama 3.1 a 131,072
one) and stop a typo such as `model.d_model=10000000000` long before it reaches an allocator.
Whether a model in range also fits the device is checked separately, before anything is
allocated (`runtime/memory.py`). Non-finite floats (nan, inf) are refused everywhere.

To raise a limit, change the constant here; the schemas (`config/model.py`, `config/train.py`,
`config/parallel.py`) read them.
"""

from __future__ import annotations

import math

from clusterlm.errors import UsageError

SEED_MAX = 2**64 - 1  # torch.manual_seed accepts [0, 2**64); numpy's generators any int ≥ 0

# --- model shapes
MAX_LAYERS = 4096
MAX_HEADS = 4096
MAX_D_MODEL = 2**17  # 131,072 (megatron-1T: 25,600)
MAX_D_FF = 2**20
MAX_VOCAB = 2**24  # ids are stored as uint32; real tokenizers stay below 2**18
MAX_SEQ_LEN = 2**21  # 2,097,152 positions
MAX_INIT_STD = 10.0
MIN_ROPE_THETA = 1.0  # below 1 each rotation frequency exceeds one radian per position; 0 gives NaN
MAX_ROPE_THETA = 1e12

# --- training loop
MAX_MICRO_BATCH = 2**16
MAX_GRAD_ACCUM = 2**20
MAX_STEPS = 10**12  # step counters, eval/log/checkpoint intervals
MAX_MINUTES = 10**7  # ~19 years
MAX_KEEP_LAST = 10**6
MAX_LR = 1e3

# --- parallel layout
MAX_DEGREE = 2**20  # any one parallel degree; their product must equal the world size anyway
MAX_TIMEOUT_S = 10**7


def check_range(name: str, value: float | None, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False) -> None:
    """UsageError naming `name` (a flag such as `--lr`) unless `value` is None or a finite number in
    [low, high] (an end excluded where `low_open` / `high_open`)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UsageError(f"{name} must be a number, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {value}")
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not (too_low or too_high):
        return
    if low is not None and high is not None:
        interval = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        interval = f"{'>' if low_open else '≥'} {low:g}"
    else:
        interval = f"{'<' if high_open else '≤'} {high:g}"
    raise UsageError(f"{name} must be {interval}, got {value}")
