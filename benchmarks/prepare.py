"""`clusterlm prepare`: end-to-end throughput vs plain `tokenizers`, and memory vs corpus size.

1. Throughput, on the embedded default corpus (the stdlib sources), with one tokenizer
   (trained once, untimed):
     peer   `Tokenizer.encode_batch(all documents)` on texts already in memory — nothing
            else (no reading, cleaning, hashing, writing); the tokenizer's default threads.
     ours   `prepare_dataset(..., tokenizer=that tokenizer)` end to end: read, decode,
            clean, hash/dedup, split, encode, write shards + sha256, manifest.
   Both are reported in MB/s of the same input bytes; each timing is the best of
   `--repeats` runs, interleaved (the least disturbed by other processes).
2. Memory: peak RSS of `clusterlm prepare --quiet` (a subprocess, tokenizer training
   included) on the default corpus copied once vs copied 4× (each copy made distinct by a
   header line, so deduplication keeps all of it and 4× the tokens are written).

    .venv/bin/python benchmarks/prepare.py [--repeats 3] [--workers 1]
Targets (issue 3): ours / peer throughput ≥ 0.7; peak RSS 4× / 1× ≤ 1.3.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from clusterlm.config.data import DataConfig
from clusterlm.data.corpus import default_corpus_files
from clusterlm.data.prepare import prepare_dataset


def peer_encode_batch(tokenizer_path: Path, files: list[Path]) -> tuple[float, int]:
    """(seconds, bytes) of plain encode_batch over the corpus texts."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_path))
    texts = [p.read_text(encoding="utf-8") for p in files]
    start = time.perf_counter()
    tok.encode_batch(texts)
    return time.perf_counter() - start, sum(p.stat().st_size for p in files)


def ours(tokenizer_path: Path, out: Path, workers: int) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    report = prepare_dataset(DataConfig(tokenizer=str(tokenizer_path), workers=workers), out)
    return time.perf_counter() - start, report["bytes"]["input"]


def replicate(files: list[Path], root: Path, copies: int) -> int:
    """Copy the corpus `copies` times under root; each copy distinct. Returns bytes written."""
    total = 0
    for k in range(copies):
        for i, path in enumerate(files):
            dst = root / f"copy{k}" / f"{i:05d}_{path.name}"
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = f"# copy {k}\n".encode() + path.read_bytes()
            dst.write_bytes(data)
            total += len(data)
    return total


def peak_rss_mb(argv: list[str]) -> tuple[float, float, float]:
    """(peak RSS of the process tree summed, sampled every 10 ms; peak RSS of the main process
    from the kernel; wall seconds) of one command."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ps = psutil.Process(proc.pid)
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            try:
                procs = [ps, *ps.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in procs))
            except psutil.Error:
                pass
            time.sleep(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, status, usage = os.wait4(proc.pid, 0)
    done.set()
    sampler.join()
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"prepare failed: {proc.stderr.read().decode() if proc.stderr else ''}")
    return peak / 1e6, usage.ru_maxrss / 1e3, wall  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=1, help="prepare --workers for both measurements")
    args = parser.parse_args()

    files = [f.path for f in default_corpus_files()]
    print(f"default corpus: {len(files)} files, {sum(p.stat().st_size for p in files) / 1e6:.1f} MB; "
          f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp_name:
        tmp = Path(tmp_name)
        # Memory first: the subprocesses start from this process while it is still small
        # (the kernel's peak RSS of a child counts the pages it had at fork time).
        peaks = {}
        for copies in (1, 4):
            root = tmp / f"x{copies}"
            size = replicate(files, root, copies)
            argv = [sys.executable, "-m", "clusterlm", "prepare", str(root), "--out", str(tmp / f"out{copies}"),
                    "--quiet", "--workers", str(args.workers)]
            tree_mb, main_mb, wall = peak_rss_mb(argv)
            peaks[copies] = tree_mb
            print(f"memory  {copies}x corpus ({size / 1e6:5.1f} MB): peak RSS {tree_mb:7.1f} MB "
                  f"(process tree, sampled), {main_mb:7.1f} MB (main process, kernel); {wall:.1f} s")
            shutil.rmtree(root)
        mem_ratio = peaks[4] / peaks[1]
        print(f"memory ratio 4x/1x = {mem_ratio:.2f}  (target <= 1.30: {'met' if mem_ratio <= 1.3 else 'NOT met'})")
        t0 = time.perf_counter()
        prepare_dataset(DataConfig(workers=args.workers), tmp / "trained")
        full_s = time.perf_counter() - t0
        print(f"prepare on the full default corpus (tokenizer training included, in-process): {full_s:.1f} s")
        tok = tmp / "trained" / "tokenizer.json"

        peer_s, ours_s = [], []
        for _ in range(args.repeats):
            s, peer_bytes = peer_encode_batch(tok, files)
            peer_s.append(s)
            s, our_bytes = ours(tok, tmp / "ours", args.workers)
            ours_s.append(s)
        peer_mbps = peer_bytes / 1e6 / min(peer_s)
        ours_mbps = our_bytes / 1e6 / min(ours_s)
        ratio = ours_mbps / peer_mbps
        print(f"throughput  peer encode_batch: {peer_mbps:6.2f} MB/s (best of {args.repeats}: {min(peer_s):.2f} s)")
        print(f"throughput  ours prepare end-to-end (workers={args.workers}): {ours_mbps:6.2f} MB/s "
              f"(best {min(ours_s):.2f} s)")
        print(f"throughput ratio ours/peer = {ratio:.2f}  (target >= 0.70: {'met' if ratio >= 0.7 else 'NOT met'})")


if __name__ == "__main__":
    main()
