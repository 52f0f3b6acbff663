"""Measure the communication of a training step: bytes, counts and time of every collective.

Three taps cover the three ways collectives are issued, each timing a collective from its
launch to its completion (gloo/NCCL run them asynchronously, so this is how long the data
was in flight, whether or not compute overlapped it):

* DDP — a gradient comm hook (`ddp_comm_hook`) that all-reduces each bucket itself
  (optionally compressed to bf16/fp16, PyTorch's `bf16_compress_hook` recipe);
* FSDP2 — custom all-gather / reduce-scatter objects (`TimedAllGather`, `TimedReduceScatter`,
  installed with `FSDPModule.set_custom_all_gather/_reduce_scatter`) that wrap the defaults;
* tensor parallel — a dispatch mode (`FunctionalCollectiveTap`) that sees DTensor's
  functional collectives and their `wait_tensor`.

Bytes follow `clusterlm.cluster.comms`: the full buffer (all-reduce: the tensor; all-gather:
the gathered output; reduce-scatter: the full input). `wire_bytes` is what one rank sends in
the ring algorithm (2(n−1)/n or (n−1)/n of that), the quantity the planner's time model uses.
A step's `comm_time_s` is the union of the collectives' in-flight intervals, so overlapping
buckets are not double counted; `compute_only_s = step_time_s − comm_time_s` is the time
with no collective in flight.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import _resolve_process_group
from torch.distributed.fsdp._fully_shard._fsdp_collectives import DefaultAllGather, DefaultReduceScatter
from torch.distributed.tensor import DTensor
from torch.utils._python_dispatch import TorchDispatchMode

ALL_REDUCE, ALL_GATHER, REDUCE_SCATTER, ALL_TO_ALL = "all_reduce", "all_gather", "reduce_scatter", "all_to_all"


def wire_factor(kind: str, group_size: int) -> float:
    """Fraction of the full buffer one rank sends in a ring collective over `group_size` ranks."""
    n = group_size
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n if kind == ALL_REDUCE else (n - 1) / n


@dataclass
class CommStep:
    """One step's communication, summed over the collectives this rank took part in."""

    bytes_by_kind: dict[str, int] = field(default_factory=dict)
    count_by_kind: dict[str, int] = field(default_factory=dict)
    wire_bytes: float = 0.0
    comm_time_s: float = 0.0  # union of in-flight intervals within the step

    @property
    def bytes(self) -> int:
        return sum(self.bytes_by_kind.values())

    @property
    def count(self) -> int:
        return sum(self.count_by_kind.values())


class CommRecorder:
    """Thread-safe log of collectives (completion callbacks run on the backend's threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[tuple[str, int, int, float, float]] = []
        self.enabled = True

    def record(self, kind: str, nbytes: int, group_size: int, start_s: float, end_s: float) -> None:
        if not self.enabled or group_size <= 1:
            return
        with self._lock:
            self._records.append((kind, int(nbytes), int(group_size), start_s, end_s))

    def pending(self) -> int:
        with self._lock:
            return len(self._records)

    def take(self) -> CommStep:
        """Summarise and clear everything recorded since the last call."""
        with self._lock:
            records, self._records = self._records, []
        step = CommStep()
        intervals = []
        for kind, nbytes, n, start, end in records:
            step.bytes_by_kind[kind] = step.bytes_by_kind.get(kind, 0) + nbytes
            step.count_by_kind[kind] = step.count_by_kind.get(kind, 0) + 1
            step.wire_bytes += nbytes * wire_factor(kind, n)
            intervals.append((start, end))
        step.comm_time_s = _union_length(intervals)
        return step


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total, cur_start, cur_end = 0.0, None, None
    for start, end in sorted(intervals):
        if cur_end is None or start > cur_end:
            if cur_end is not None:
                total += cur_end - cur_start
            cur_start, cur_end = start, end
        else:
            cur_end = max(cur_end, end)
    if cur_end is not None:
        total += cur_end - cur_start
    return total


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _on_completion(work: Any, recorder: CommRecorder, kind: str, nbytes: int, n: int, start: float) -> None:
    """Record the collective when `work` completes (immediately if it already has)."""
    if work is None:
        recorder.record(kind, nbytes, n, start, time.perf_counter())
        return

    def done(fut: Any) -> Any:
        recorder.record(kind, nbytes, n, start, time.perf_counter())
        return fut.value()

    work.get_future().then(done)


# ------------------------------------------------------------------------------------------ DDP
@dataclass
class DDPHookState:
    group: Any  # the data-parallel process group
    recorder: CommRecorder | None
    compress_dtype: torch.dtype | None  # bf16 / fp16 compression, or None


def ddp_comm_hook(state: DDPHookState, bucket):  # noqa: ANN001, ANN201 - DDP checks the annotations
    """All-reduce one gradient bucket (mean over ranks), timed, optionally 16-bit on the wire.

    `bucket` is a `dist.GradBucket`; returns a Future of the reduced bucket."""
    group = state.group
    n = group.size()
    buffer = bucket.buffer()
    # Pre-divide (as PyTorch's default hook does) so 16-bit sums cannot overflow.
    payload = buffer.to(state.compress_dtype) if state.compress_dtype is not None else buffer
    payload.div_(n)
    start = time.perf_counter()
    fut = dist.all_reduce(payload, group=group, async_op=True).get_future()
    recorder, nbytes = state.recorder, _nbytes(payload)

    def done(f: Any) -> torch.Tensor:
        if recorder is not None:
            recorder.record(ALL_REDUCE, nbytes, n, start, time.perf_counter())
        reduced = f.value()[0]
        if reduced.dtype == buffer.dtype:
            return reduced
        buffer.copy_(reduced)  # decompress into DDP's fp32 bucket
        return buffer

    return fut.then(done)


# ------------------------------------------------------------------------------------------ FSDP2
def fsdp_comms(recorder: CommRecorder) -> tuple[Any, Any]:
    """(all-gather, reduce-scatter) objects for `set_custom_all_gather/_reduce_scatter`."""
    class TimedAllGather(DefaultAllGather):
        def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: Any,
                     async_op: bool = False) -> Any:
            start = time.perf_counter()
            work = super().__call__(output_tensor, input_tensor, group, async_op)
            _on_completion(work, recorder, ALL_GATHER, _nbytes(output_tensor), group.size(), start)
            return work

    class TimedReduceScatter(DefaultReduceScatter):
        def __call__(self, output_tensor: torch.Tensor, input_tensor: torch.Tensor, group: Any, op: Any,
                     async_op: bool = False) -> Any:
            start = time.perf_counter()
            work = super().__call__(output_tensor, input_tensor, group, op, async_op)
            _on_completion(work, recorder, REDUCE_SCATTER, _nbytes(input_tensor), group.size(), start)
            return work

    return TimedAllGather(), TimedReduceScatter()


# ------------------------------------------------------------------------------------------ TP
class FunctionalCollectiveTap:
    """Dispatch mode recording DTensor's functional collectives (tensor parallelism).

    Each collective is waited on right after it is issued and timed from issue to completion.
    Eager TP consumes every collective's result in the next op anyway, so this forces no
    serialisation that was not already there; it only makes the completion observable
    (DTensor otherwise waits inside its own dispatch, out of a mode's sight).
    """

    def __init__(self, recorder: CommRecorder) -> None:
        ops = torch.ops._c10d_functional
        kinds = {
            ops.all_reduce.default: ALL_REDUCE,
            ops.all_gather_into_tensor.default: ALL_GATHER,
            ops.reduce_scatter_tensor.default: REDUCE_SCATTER,
            ops.all_to_all_single.default: ALL_TO_ALL,
        }
        wait = ops.wait_tensor.default

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                # Let DTensor run first (modes normally run before subclasses): it then lowers
                # its redistributions to functional collectives, which come back through here.
                if any(t is DTensor for t in types):
                    return NotImplemented
                kwargs = kwargs or {}
                kind = kinds.get(func)
                if kind is None:
                    return func(*args, **kwargs)
                start = time.perf_counter()
                out = func(*args, **kwargs)
                wait(out)
                full = out if kind == ALL_GATHER else args[0]
                recorder.record(kind, _nbytes(full), _group_size(args, kwargs), start, time.perf_counter())
                return out

        self.mode = _Mode()

    def __enter__(self) -> FunctionalCollectiveTap:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _group_size(args: Any, kwargs: Any) -> int:
    group_name = args[-1] if args and isinstance(args[-1], str) else kwargs.get("group_name")
    return _resolve_process_group(group_name).size()
