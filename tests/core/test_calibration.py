"""Under torch.distributed, calibration averages mean|u_t| across ranks: all ranks hold equal amplitudes."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from spikelm_core.neurons import BiSpikeNeuron


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(100 + rank)  # different data on every rank
    n = BiSpikeNeuron(3)
    n(torch.randn(3, 64) * (1 + rank))
    out[rank] = n.alpha.tolist()
    dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_calibrate_identically():
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(2, _free_port(), out), nprocs=2, join=True)
        a0, a1 = out[0], out[1]
    assert a0 == a1
    x0 = torch.Generator().manual_seed(100)
    step0 = 2.0 * (torch.randn(3, 64, generator=x0)[0].abs().mean()
                   + (torch.randn(3, 64, generator=torch.Generator().manual_seed(101)) * 2)[0].abs().mean()) / 2
    assert abs(a0[0] - step0.item()) < 1e-5
