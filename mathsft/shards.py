"""Sharing one evaluation between processes: ``accelerate launch --num_processes N run_eval.py ...``.

Each process loads the model once and generates a disjoint share of the (problem, sample) pairs left to do, appending
its graded rows, flushed row batch by row batch, to its own ``generations.rank<R>.jsonl``. When every process is done,
process 0 merges the shares into the one ``generations.jsonl`` (skipping pairs already there) and writes the one
``summary.json``. Shares left by an interrupted run are merged first on the next run, by any number of processes, so
nothing generated is lost or written twice.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mathsft import artifacts

SHARD_PATTERN = "generations.rank*.jsonl"


@dataclass(frozen=True)
class Shard:
    """This process's place among the evaluation processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def take(self, items: list[Any]) -> list[Any]:
        """This process's share: every ``world_size``-th item, starting at ``rank``."""
        return items[self.rank :: self.world_size]

    def rows_path(self, output: Path) -> Path:
        """Where this process appends its rows: the shared file alone, a file of its own when there are several."""
        return output / (f"generations.rank{self.rank}.jsonl" if self.distributed else artifacts.GENERATIONS)


def current_shard() -> Shard:
    """The shard this process was launched as (``accelerate launch`` / ``torchrun`` set these variables)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    return Shard(rank=rank, world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", str(rank))))


class ProcessGroup:
    """Barriers and reductions between the evaluation processes (gloo, so they work on CPU and GPU alike)."""

    def __init__(self, shard: Shard) -> None:
        self.shard = shard
        if shard.distributed:
            import torch.distributed as dist

            if not dist.is_initialized():
                # Shares finish at different times; a long evaluation must not time out at the final barrier.
                dist.init_process_group(backend="gloo", timeout=datetime.timedelta(hours=24))

    def barrier(self) -> None:
        if self.shard.distributed:
            import torch.distributed as dist

            dist.barrier()

    def reduce(self, value: float, op: str) -> float:
        """``value`` summed (``op="sum"``) or maximised (``op="max"``) over the processes."""
        if not self.shard.distributed:
            return value
        import torch
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        return float(tensor.item())

    def close(self) -> None:
        if self.shard.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()


def merge_shards(output: Path) -> int:
    """Append the rows of every ``generations.rank*.jsonl`` to ``generations.jsonl`` (pairs not there yet), fsync'd,
    then delete the shares; returns the number of rows added. Only the lock holder may call this."""
    shards = sorted(output.glob(SHARD_PATTERN))
    if not shards:
        return 0
    target = output / artifacts.GENERATIONS
    seen = {(row["id"], row["sample"]) for row in artifacts.read_jsonl_rows(target, repair=True)}
    added = []
    for shard in shards:
        for row in artifacts.read_jsonl_rows(shard, repair=True):
            key = (row["id"], row["sample"])
            if key not in seen:
                seen.add(key)
                added.append(row)
    with artifacts.JsonlAppender(target) as appender:
        appender.write(sorted(added, key=lambda row: (row["id"], row["sample"])))
    for shard in shards:  # only now: the merged rows are on disk
        shard.unlink()
    return len(added)
