"""Reading a task's rank, world and rendezvous host from Slurm's environment (pure functions)."""

from __future__ import annotations

import pytest

from clusterlm.runtime.process import launch_env
from clusterlm.runtime.slurm_env import (
    PORT_BASE,
    expand_hostlist,
    expand_tasks_per_node,
    rendezvous_port,
    slurm_task,
)
from clusterlm.errors import DistributedError


@pytest.mark.parametrize("hostlist,hosts", [
    ("vm", ["vm"]),
    ("node[001-003]", ["node001", "node002", "node003"]),
    ("gpu[01-02,07],login-a", ["gpu01", "gpu02", "gpu07", "login-a"]),
    ("r[1-2]-n[8-9]", ["r1-n8", "r1-n9", "r2-n8", "r2-n9"]),  # several groups: a product, Slurm's order
    ("a[9-11]x,b", ["a9x", "a10x", "a11x", "b"]),  # widths from the lower bound (no padding here)
    ("c[098-100]", ["c098", "c099", "c100"]),
])
def test_expand_hostlist(hostlist, hosts):
    assert expand_hostlist(hostlist) == hosts


@pytest.mark.parametrize("bad", ["node[1-3", "node1-3]", "node[a-b]", "node[5-2]"])
def test_malformed_hostlists_are_errors(bad):
    with pytest.raises(DistributedError, match="host list"):
        expand_hostlist(bad)


def test_expand_tasks_per_node():
    assert expand_tasks_per_node("2(x3),1") == [2, 2, 2, 1]
    assert expand_tasks_per_node("4") == [4]
    with pytest.raises(DistributedError, match="tasks-per-node"):
        expand_tasks_per_node("2(x)")


def step_env(**extra: str) -> dict[str, str]:
    """What srun sets for task 3 of 4 (2 per node on gpu[07-08]) of job 4242, step 1."""
    env = {"SLURM_JOB_ID": "4242", "SLURM_STEP_ID": "1", "SLURM_PROCID": "3", "SLURM_LOCALID": "1",
           "SLURM_NODEID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "8",
           "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_NODELIST": "gpu[07-09]",
           "SLURM_STEP_TASKS_PER_NODE": "2(x2)", "SLURM_RESTART_COUNT": "2"}
    return {**env, **extra}


def test_step_task_fields():
    task = slurm_task(step_env())
    assert (task.rank, task.world_size, task.local_rank, task.local_world_size) == (3, 4, 1, 2)
    assert (task.node_rank, task.num_nodes, task.restart_count) == (1, 2, 2)
    # The step's first node hosts rank 0's store; every task computes the same port.
    assert task.master_addr == "gpu07" and task.master_port == rendezvous_port("4242", "1")
    assert task.rendezvous_url == f"tcp://gpu07:{task.master_port}"
    assert slurm_task(step_env(SLURM_PROCID="0")).rendezvous_url == task.rendezvous_url


def test_step_values_win_over_job_values():
    """A step may use fewer tasks/nodes than the allocation (SLURM_NTASKS=8 above)."""
    env = step_env()
    del env["SLURM_STEP_NUM_TASKS"], env["SLURM_STEP_NODELIST"]
    task = slurm_task(env)
    assert task.world_size == 8 and task.master_addr == "gpu07" and task.num_nodes == 3


def test_ports_differ_between_jobs_and_steps_and_master_port_overrides():
    ports = {rendezvous_port(job, step) for job in ("1", "2", "999") for step in ("0", "1")}
    assert len(ports) == 6 and all(PORT_BASE <= p < 32768 for p in ports)
    assert slurm_task(step_env(MASTER_PORT="29999", MASTER_ADDR="10.0.0.1")).rendezvous_url == "tcp://10.0.0.1:29999"


def test_batch_script_and_outside_slurm_are_not_tasks():
    # The batch step has SLURM_PROCID=0 and SLURM_NTASKS=8 but no step id: it must not wait for peers.
    batch = {k: v for k, v in step_env(SLURM_PROCID="0").items() if not k.startswith("SLURM_STEP")}
    assert slurm_task(batch) is None
    assert slurm_task({}) is None


@pytest.mark.parametrize("extra,match", [
    (dict(SLURM_PROCID="x"), "must be integers"),
    (dict(SLURM_PROCID="4"), "outside the step's 4 tasks"),
    (dict(SLURM_NODEID="2"), "spans 2 node"),
])
def test_inconsistent_slurm_environment_is_an_error(extra, match):
    with pytest.raises(DistributedError, match=match):
        slurm_task(step_env(**extra))


def test_launch_env_reads_slurm_and_torchrun_wins():
    env = launch_env(step_env())
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.restart_count) == (3, 4, 1, 2, 2)
    assert env.rendezvous.startswith("tcp://gpu07:")
    # `srun torchrun …`: the workers carry torchrun's RANK/WORLD_SIZE, which describe the real job.
    torchrun = launch_env(step_env(RANK="5", WORLD_SIZE="16", LOCAL_RANK="1", MASTER_ADDR="gpu07"))
    assert (torchrun.rank, torchrun.world_size, torchrun.rendezvous) == (5, 16, "env://")
    assert launch_env({}) is None

