"""The collectives of corockpt's checkpoint channel on a torch.distributed gloo group.

The C++ engine (python/native/python_channel.cpp) calls these from its channel thread,
one at a time, in the same order on every rank: only the small plans and outcomes of
saves travel here, as bytes. The group is the AsyncCheckpointer's own (a gloo group it
creates), never the training loop's; its timeout is the checkpointer's deadline.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


class GlooChannel:
    def __init__(self, group):
        self.group = group
        self.rank = dist.get_rank(group)
        self.size = dist.get_world_size(group)

    def _global(self, group_rank: int) -> int:
        return dist.get_global_rank(self.group, group_rank)

    @staticmethod
    def _tensor(data: bytes, length: int) -> torch.Tensor:
        """`data` in a uint8 tensor of `length` bytes (at least 1: gloo moves no empty tensors)."""
        tensor = torch.zeros(max(length, 1), dtype=torch.uint8)
        if data:
            tensor[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        return tensor

    def all_gather(self, data: bytes) -> bytes:
        return self.all_gather_v(data, [len(data)] * self.size)

    def all_gather_v(self, data: bytes, counts: list[int]) -> bytes:
        longest = max(counts) if counts else 0
        parts = [self._tensor(b"", longest) for _ in range(self.size)]
        dist.all_gather(parts, self._tensor(data, longest), group=self.group)
        return b"".join(bytes(part[:count].numpy()) for part, count in zip(parts, counts))

    def gather_v(self, data: bytes, counts: list[int], root: int) -> bytes:
        longest = max(counts) if counts else 0
        mine = self._tensor(data, longest)
        if self.rank == root:
            parts = [self._tensor(b"", longest) for _ in range(self.size)]
            dist.gather(mine, parts, dst=self._global(root), group=self.group)
            return b"".join(bytes(part[:count].numpy()) for part, count in zip(parts, counts))
        dist.gather(mine, None, dst=self._global(root), group=self.group)
        return b""

    def broadcast(self, data: bytes, length: int, root: int) -> bytes:
        tensor = self._tensor(data if self.rank == root else b"", length)
        dist.broadcast(tensor, src=self._global(root), group=self.group)
        return bytes(tensor[:length].numpy())

    def barrier(self) -> None:
        dist.barrier(group=self.group)
