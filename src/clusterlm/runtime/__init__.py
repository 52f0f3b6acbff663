"""The run-time layer below `train` and `distributed`: which device, which processes, which mesh.

    device.py       `resolve_device("auto" | "cpu" | "cuda:N")`
    process.py      this process's place in a torchrun/Slurm job → `Process`, and joining the group
    collectives.py  scalar reductions, barriers and broadcasts the trainer needs (identity for one process)
    mesh.py         a validated `ParallelPlan` → a `DeviceMesh` with named dimensions
    precision.py    `train.precision` → a `Precision`; timing-based choices made on rank 0 and broadcast
    measure.py      matmul timings (CPU precision choice, MFU peaks, the cluster probe)
    host.py         host allocator tuning (applied only by the CLI entry point)
"""
