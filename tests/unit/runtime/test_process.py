"""How a process places itself in a job: thread counts for CPU ranks sharing a host."""

from __future__ import annotations


def test_cpu_ranks_on_one_host_share_its_cores():
    import os

    import torch

    from clusterlm.runtime.collectives import Collectives
    from clusterlm.runtime.process import Process, cpu_threads_per_rank

    four = Process(rank=0, world_size=4, local_world_size=4, collectives=Collectives(0, 1))  # no group needed
    cores = os.cpu_count() or 1
    assert cpu_threads_per_rank(four, {}) == max(1, cores // 4)
    assert cpu_threads_per_rank(four, {"OMP_NUM_THREADS": "3"}) is None  # the user's
    # 2 nodes x 4 ranks: each host's cores are shared by its 4 ranks, not by all 8
    two_nodes = Process(rank=0, world_size=8, local_world_size=4, collectives=Collectives(0, 1))
    assert cpu_threads_per_rank(two_nodes, {}) == max(1, cores // 4)
    assert cpu_threads_per_rank(Process(), {}) is None  # one process: torch's own choice
    gpu = Process(rank=0, world_size=4, device=torch.device("cuda", 0), collectives=Collectives(0, 1))
    assert cpu_threads_per_rank(gpu, {}) is None



def test_plain_srun_over_two_nodes_gives_each_host_its_own_tasks_per_node():
    from clusterlm.runtime.process import launch_env

    env = launch_env({"SLURM_PROCID": "5", "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": "8",
                      "SLURM_LOCALID": "1", "SLURM_NODEID": "1", "SLURM_STEP_TASKS_PER_NODE": "4(x2)",
                      "SLURM_STEP_NODELIST": "node[01-02]", "SLURM_JOB_ID": "7"})
    assert env is not None and (env.world_size, env.local_world_size) == (8, 4)
