"""How a process places itself in a job: thread counts for CPU ranks sharing a host."""

from __future__ import annotations


def test_cpu_ranks_on_one_host_share_its_cores():
    import os

    import torch

    from clusterlm.runtime.collectives import Collectives
    from clusterlm.runtime.process import Process, cpu_threads_per_rank

    four = Process(rank=0, world_size=4, collectives=Collectives(0, 1))  # decide_on_main: no group needed
    cores = os.cpu_count() or 1
    assert cpu_threads_per_rank(four, {"LOCAL_WORLD_SIZE": "4"}) == max(1, cores // 4)
    assert cpu_threads_per_rank(four, {"LOCAL_WORLD_SIZE": "4", "OMP_NUM_THREADS": "3"}) is None  # the user's
    assert cpu_threads_per_rank(Process(), {}) is None  # one process: torch's own choice
    gpu = Process(rank=0, world_size=4, device=torch.device("cuda", 0), collectives=Collectives(0, 1))
    assert cpu_threads_per_rank(gpu, {}) is None
