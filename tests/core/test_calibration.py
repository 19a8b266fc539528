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


def test_text_batches_frame_encoders_and_causal_lms():
    from spikelm_core.calibration import text_batches
    from tests.conftest import tiny_llama_tokenizer

    tok = tiny_llama_tokenizer()
    tok.cls_token, tok.sep_token = "<s>", "</s>"  # an encoder-style framing for comparison
    text = "the river rose\nand the bridge\n" * 30
    causal = text_batches(tok, text, seq_len=9, batch_size=4, causal=True)
    first = causal[0]
    assert set(first) == {"input_ids", "attention_mask"} and first["input_ids"].shape == (4, 9)
    assert (first["input_ids"][:, 0] == tok.bos_token_id).all() and bool(first["attention_mask"].all())
    assert (first["input_ids"][:, 1:] != tok.bos_token_id).all()  # [BOS] + 8 text tokens, no end token
    encoder = text_batches(tok, text, seq_len=9, batch_size=4)[0]
    assert set(encoder) == {"input_ids", "attention_mask", "token_type_ids"}
    assert (encoder["input_ids"][:, 0] == tok.cls_token_id).all()
    assert (encoder["input_ids"][:, -1] == tok.sep_token_id).all()


def test_default_calibration_text_for_causal_lms(tmp_path, monkeypatch):
    from spikelm_core import calibration

    wiki = tmp_path / "valid.txt"
    wiki.write_text(" = Title = \n running text\n")
    monkeypatch.setattr(calibration, "CAUSAL_CALIBRATION_FILE", wiki)
    assert calibration.calibration_text(causal=True) == (wiki.read_text(), str(wiki))
    assert calibration.calibration_text()[1] == calibration.PACKAGED  # encoders keep the packaged prose
    monkeypatch.setattr(calibration, "CAUSAL_CALIBRATION_FILE", tmp_path / "absent.txt")
    assert calibration.calibration_text(causal=True)[1] == calibration.PACKAGED
    assert calibration.calibration_text(wiki, causal=False)[1] == str(wiki)
