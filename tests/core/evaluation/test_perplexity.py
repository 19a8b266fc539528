"""Perplexity windows and scoring (`spikelm_core.evaluation.perplexity`) against a hand computation."""

from __future__ import annotations

import math

import pytest
import torch

from spikelm_core.errors import ConfigError, DataError
from spikelm_core.evaluation.perplexity import LOGIT_BUDGET, lm_windows, perplexity, score_windows, scored_tokens

BOS = 1


@pytest.mark.parametrize("n, seq_len, stride, bos", [
    pytest.param(40, 8, None, BOS, id="bos-nonoverlapping"),
    pytest.param(40, 8, 3, BOS, id="bos-stride3"),
    pytest.param(40, 8, None, None, id="nobos-default"),
    pytest.param(40, 8, 1, None, id="nobos-stride1"),
    pytest.param(7, 8, None, BOS, id="bos-one-window"),
    pytest.param(41, 7, 6, None, id="nobos-widest"),
])
def test_every_token_is_scored_once(n, seq_len, stride, bos):
    ids = list(range(100, 100 + n))  # distinct ids: a scored token names its position
    windows = lm_windows(ids, seq_len, stride=stride, bos_token_id=bos)
    scored = [t for w in windows for t in w.input_ids[len(w.input_ids) - w.scored:]]
    expected = ids if bos is not None else ids[1:]  # without BOS the very first token has no context
    assert scored == expected and scored_tokens(windows) == len(expected)
    for w in windows:
        assert len(w.input_ids) <= seq_len
        assert 1 <= w.scored <= len(w.input_ids) - 1  # a scored token always has something before it
        if bos is not None:
            assert w.input_ids[0] == bos and bos not in w.input_ids[1:]


def test_default_windows_do_not_overlap_with_bos_and_share_one_token_without():
    ids = list(range(10, 30))
    with_bos = lm_windows(ids, 5, bos_token_id=BOS)
    assert [w.input_ids for w in with_bos][:2] == [(BOS, 10, 11, 12, 13), (BOS, 14, 15, 16, 17)]
    assert [w.scored for w in with_bos] == [4] * 5
    without = lm_windows(ids, 5)
    assert [w.input_ids for w in without][:2] == [(10, 11, 12, 13, 14), (14, 15, 16, 17, 18)]
    assert without[0].scored == 4 and without[1].scored == 4


def test_a_text_shorter_than_one_window_is_a_data_error_with_the_counts():
    with pytest.raises(DataError, match=r"holds 5 tokens, fewer than one window: --seq-len 8 needs 7 text tokens"):
        lm_windows([5] * 5, 8, bos_token_id=BOS, what="the text")
    # a training run's windows name the recipe key that sized them, and how to set it
    with pytest.raises(DataError, match=r"data.max_length 8 needs 7 text tokens") as exc:
        lm_windows([5] * 5, 8, bos_token_id=BOS, what="the train text", setting="data.max_length")
    assert exc.value.hint == "give a longer text, or data.max_length 6 or less (-s data.max_length=6)"


@pytest.mark.parametrize("seq_len, stride, needle", [
    pytest.param(8, 8, "--stride 8 does not fit --seq-len 8", id="stride-too-wide"),
    pytest.param(8, 0, "--stride 0", id="stride-zero"),
    pytest.param(1, None, "at least 2", id="seq-len-one"),
])
def test_bad_window_settings_are_config_errors(seq_len, stride, needle):
    with pytest.raises(ConfigError, match=needle):
        lm_windows(list(range(50)), seq_len, stride=stride, bos_token_id=BOS)


def _tiny_llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.conftest import LLAMA_TINY

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**LLAMA_TINY)).eval()


def _by_hand(model, ids, seq_len):
    """exp(mean NLL) over non-overlapping [BOS] + (seq_len - 1)-token windows, token by token."""
    nll, count = 0.0, 0
    width = seq_len - 1
    for start in range(0, len(ids), width):
        chunk = ids[start:start + width]
        with torch.no_grad():
            logits = model(torch.tensor([[BOS, *chunk]])).logits[0].double()
        logp = torch.log_softmax(logits, dim=-1)
        for i, token in enumerate(chunk):  # position i predicts the token at i + 1
            nll -= float(logp[i, token])
            count += 1
    return math.exp(nll / count), count


def test_perplexity_equals_a_hand_computation():
    model = _tiny_llama()
    ids = torch.randint(3, 101, (53,), generator=torch.Generator().manual_seed(1)).tolist()
    expected, count = _by_hand(model, ids, seq_len=9)
    windows = lm_windows(ids, 9, bos_token_id=BOS)
    score = score_windows(model, windows, batch_size=4)
    assert score.tokens == count == 53 and score.windows == 7  # six full windows and one of 5 tokens
    assert score.perplexity == pytest.approx(expected, rel=1e-5)
    assert score.perplexity == pytest.approx(perplexity(score.nll, score.tokens))
    assert score.tokens_read == 6 * 9 + 6 and score.tokens_per_second > 0
    # batching never changes the numbers
    assert score_windows(model, windows, batch_size=1).nll == pytest.approx(score.nll, rel=1e-6)


def test_sliding_windows_score_the_new_tokens_with_more_context():
    model = _tiny_llama()
    ids = torch.randint(3, 101, (40,), generator=torch.Generator().manual_seed(2)).tolist()
    wide = score_windows(model, lm_windows(ids, 9, bos_token_id=BOS))
    sliding_windows = lm_windows(ids, 9, stride=2, bos_token_id=BOS)
    sliding = score_windows(model, sliding_windows)
    assert sliding.tokens == wide.tokens == 40 and sliding.windows > wide.windows
    # by hand: each new token is predicted from its window's full left context
    nll = 0.0
    for w in sliding_windows:
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([w.input_ids])).logits[0].double(), dim=-1)
        L = len(w.input_ids)
        for pos in range(L - w.scored, L):
            nll -= float(logp[pos - 1, w.input_ids[pos]])
    assert sliding.nll == pytest.approx(nll, rel=1e-5)


def test_batches_respect_the_logit_budget(monkeypatch):
    import spikelm_core.evaluation.perplexity as ppl

    model = _tiny_llama()
    ids = list(range(3, 99)) * 2
    windows = lm_windows(ids, 9, bos_token_id=BOS)
    calls = []
    forward = model.forward

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", counting)
    monkeypatch.setattr(ppl, "LOGIT_BUDGET", 2 * 9 * 101)  # two windows' logits
    small = score_windows(model, windows, batch_size=8)
    assert max(calls) == 2 and LOGIT_BUDGET > 2 * 9 * 101
    calls.clear()
    monkeypatch.setattr(ppl, "LOGIT_BUDGET", LOGIT_BUDGET)
    assert score_windows(model, windows, batch_size=8).nll == pytest.approx(small.nll, rel=1e-6)
    assert max(calls) == 8


def test_spiking_perplexity_equals_a_hand_computation():
    from tests.core.models.test_spiking_llama import calibrated

    model = calibrated()  # T = 3, amplitudes calibrated on a random batch
    ids = torch.randint(3, 101, (30,), generator=torch.Generator().manual_seed(3)).tolist()
    expected, count = _by_hand(model, ids, seq_len=9)
    score = score_windows(model, lm_windows(ids, 9, bos_token_id=BOS), batch_size=3)
    assert score.tokens == count == 30 and score.perplexity == pytest.approx(expected, rel=1e-5)


def test_a_perplexity_beyond_the_largest_float_is_infinite_not_an_overflow_error():
    """A diverged model (mean NLL above ~709.78 nats) scores math.inf; exp() would raise OverflowError
    and crash eval (and a causal-LM training run's final evaluation, before final/ is saved)."""
    from spikelm_core.evaluation.masked_lm import MaskedLmScore
    from spikelm_core.training.results import EvalResult

    assert perplexity(1445.8 * 200, 200) == math.inf
    assert perplexity(700.0 * 3, 3) == pytest.approx(math.exp(700.0))
    assert MaskedLmScore(nll=9999.0 * 16, correct=0, masked_tokens=16, sequences=4).perplexity == math.inf
    # JSON has no Infinity: eval's machine-readable result says null
    import json

    result = EvalResult(model="m", task="wikitext2", metrics={"test": {"perplexity": math.inf, "nll": 1445.8}},
                        perplexity=math.inf)
    text = json.dumps(result.to_dict(), allow_nan=False)  # raises on a non-finite number
    assert json.loads(text)["metrics"]["test"] == {"perplexity": None, "nll": 1445.8}


def test_tokens_predicted_from_all_equal_logits_are_counted():
    """A collapsed model (every logit equal) scores exactly the vocabulary size; the score says how many
    tokens it guessed uniformly, so eval can warn instead of reporting it as a measurement."""
    from types import SimpleNamespace

    class Flat(torch.nn.Module):
        config = SimpleNamespace(vocab_size=11)

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, input_ids, use_cache=False, logits_to_keep=0):
            B, L = input_ids.shape
            return SimpleNamespace(logits=torch.zeros(B, logits_to_keep or L, 11) * self.w)

    score = score_windows(Flat(), lm_windows(list(range(3, 10)) * 5, 8, bos_token_id=1))
    assert score.uniform == score.tokens == 35
    assert score.perplexity == pytest.approx(11)
