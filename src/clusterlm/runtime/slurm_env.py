"""A process's place in a Slurm job step, read from Slurm's environment (pure functions).

`srun` starts one task per rank and tells each who it is: SLURM_PROCID (global rank),
SLURM_STEP_NUM_TASKS (world size), SLURM_LOCALID (rank on this node), SLURM_NODEID (node
rank), SLURM_STEP_TASKS_PER_NODE (`2(x3),1`: how many tasks each node runs) and
SLURM_STEP_NODELIST (`node[001-004]`: the step's hosts, the first of which hosts the
rendezvous store). `slurm_task` turns that into the fields torchrun would have given
(rank, world size, local rank, local world size, restart count) plus the rendezvous
address, so `srun clusterlm train …` needs no torchrun. Under `srun torchrun …`
torchrun's RANK/WORLD_SIZE take precedence (see `runtime.process.launch_env`).

Only processes of a job *step* count: the batch script itself also sees SLURM_PROCID=0
and SLURM_NTASKS=N, but has no SLURM_STEP_ID, and must not wait for N-1 peers.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from clusterlm.errors import DistributedError

# Rendezvous ports derived from the job id stay below Linux's ephemeral range (32768+),
# so a port is not already taken by some outgoing connection.
PORT_BASE = 15000
PORT_SPAN = 10000


@dataclass(frozen=True)
class SlurmTask:
    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    restart_count: int  # how often the job was requeued (SLURM_RESTART_COUNT)
    node_rank: int
    num_nodes: int
    job_id: str
    master_addr: str  # first host of the step: rank 0 runs there and hosts the store
    master_port: int

    @property
    def rendezvous_url(self) -> str:
        """For `torch.distributed.rendezvous`: rank 0 serves a TCPStore, the others connect."""
        return f"tcp://{self.master_addr}:{self.master_port}"


def expand_hostlist(hostlist: str) -> list[str]:
    """Slurm's compressed host list → host names: `gpu[01-03,07],login-a[1-2]x` →
    gpu01 gpu02 gpu03 gpu07 login-a1x login-a2x (zero padding kept; several bracket
    groups in one name expand as a product, in Slurm's order)."""
    hosts: list[str] = []
    for item in _split_top_level(hostlist.strip()):
        hosts.extend(_expand_one(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise DistributedError(f"malformed Slurm host list {text!r}: unbalanced ']'")
        elif ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    if depth != 0:
        raise DistributedError(f"malformed Slurm host list {text!r}: unbalanced '['")
    items.append(text[start:])
    return [item for item in items if item]


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if match is None:
        return [item]
    head, tail = item[: match.start()], item[match.end():]
    out = []
    for value in _expand_ranges(match.group(1), item):
        out.extend(head + value + rest for rest in _expand_one(tail))
    return out


def _expand_ranges(spec: str, item: str) -> list[str]:
    values = []
    for part in spec.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise DistributedError(f"malformed range [{spec}] in Slurm host list {item!r}")
        if not sep:
            values.append(lo)
            continue
        if int(hi) < int(lo):
            raise DistributedError(f"descending range {part} in Slurm host list {item!r}")
        values.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi) + 1))
    return values


def expand_tasks_per_node(spec: str) -> list[int]:
    """`2(x3),1` → [2, 2, 2, 1] (SLURM_STEP_TASKS_PER_NODE / SLURM_TASKS_PER_NODE)."""
    counts: list[int] = []
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)(?:\(x(\d+)\))?\s*", part)
        if match is None:
            raise DistributedError(f"malformed Slurm tasks-per-node value {spec!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def rendezvous_port(job_id: str, step_id: str = "0") -> int:
    """A port every task of the step computes alike; distinct for jobs (mod 1000) and steps (mod 10)
    that might share a head node. MASTER_PORT overrides it."""
    job = int(re.sub(r"\D", "", job_id) or 0)
    step = int(step_id) if step_id.isdigit() else 0
    return PORT_BASE + ((job % 1000) * 10 + step % 10) % PORT_SPAN


def slurm_task(environ: Mapping[str, str]) -> SlurmTask | None:
    """This process's place in an `srun` job step, or None when it is not a step task
    (not under Slurm, or the batch script / an `salloc` shell itself)."""
    if "SLURM_STEP_ID" not in environ or "SLURM_PROCID" not in environ:
        return None
    try:
        rank = int(environ["SLURM_PROCID"])
        world_size = int(environ.get("SLURM_STEP_NUM_TASKS") or environ["SLURM_NTASKS"])
        local_rank = int(environ.get("SLURM_LOCALID", 0))
        node_rank = int(environ.get("SLURM_NODEID", 0))
        restarts = int(environ.get("SLURM_RESTART_COUNT", 0) or 0)
    except (KeyError, ValueError):
        raise DistributedError("SLURM_PROCID/SLURM_STEP_NUM_TASKS/SLURM_LOCALID must be integers "
                               "(is this process a task started by srun?)") from None
    if not 0 <= rank < world_size:
        raise DistributedError(f"SLURM_PROCID {rank} is outside the step's {world_size} tasks")
    hosts = expand_hostlist(environ.get("SLURM_STEP_NODELIST") or environ.get("SLURM_JOB_NODELIST", ""))
    if not hosts:
        raise DistributedError("SLURM_STEP_NODELIST is empty: cannot tell which node hosts rank 0")
    per_node_spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE")
    per_node = expand_tasks_per_node(per_node_spec) if per_node_spec else [world_size]
    if not 0 <= node_rank < len(per_node):
        raise DistributedError(f"SLURM_NODEID {node_rank} but the step spans {len(per_node)} node(s)")
    job_id = environ.get("SLURM_JOB_ID", "0")
    port_text = environ.get("MASTER_PORT")
    port = int(port_text) if port_text and port_text.isdigit() else rendezvous_port(
        job_id, environ.get("SLURM_STEP_ID", "0"))
    return SlurmTask(rank=rank, world_size=world_size, local_rank=local_rank,
                     local_world_size=per_node[node_rank], restart_count=restarts, node_rank=node_rank,
                     num_nodes=len(hosts), job_id=job_id, master_addr=environ.get("MASTER_ADDR") or hosts[0],
                     master_port=port)
