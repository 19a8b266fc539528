"""Masked-LM pretraining: masks that are a pure function of (seed, epoch, example), so a run killed
and resumed from a checkpoint ends with the weights of an uninterrupted one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from spikelm_core.config import PretrainConfig, load_config
from spikelm_core.data.text import EXAMPLE_INDEX
from spikelm_core.training.mlm import seeded_masking_collator
from spikelm_core.training.pretrain import run_pretrain
from tests.training_fixtures import tiny_dirs  # noqa: F401


class _Kill(Exception):
    pass


class _KillAfter:
    def __init__(self, step):
        self.step = step

    def __getattr__(self, name):  # every other callback event: nothing
        return lambda *a, **k: None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise _Kill()


def _cfg(dirs, out, *extra):
    sets = [f"tokenizer={dirs['dense']}", f"data.source={dirs['corpus']}", "data.validation_file=null",
            "data.eval_subset=null", "data.max_length=16",
            "neuron.num_timesteps=2", "train.batch_size=4", "train.max_steps=6", "train.save_steps=3",
            "model_config.hidden_dropout_prob=0.0", "model_config.attention_probs_dropout_prob=0.0", *extra]
    return load_config(PretrainConfig, "recipes/tiny/pretrain.yaml", sets, out_dir=str(out))


def test_masks_are_a_function_of_seed_epoch_and_example(tiny_dirs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dirs["dense"])
    rows = [tok(t) for t in ("the river rose over the old stone bridge at dawn today", "farmers moved")]
    examples = [{"input_ids": r["input_ids"], EXAMPLE_INDEX: i} for i, r in enumerate(rows)]
    collate = seeded_masking_collator(tok, 0.5, seed=3)
    together = collate(examples)
    alone = collate([examples[1]])  # another batch, no padding: the same masks for the same example
    n = len(rows[1]["input_ids"])
    assert torch.equal(together["labels"][1, :n], alone["labels"][0]) and (together["labels"][1, n:] == -100).all()
    assert torch.equal(together["input_ids"][1, :n], alone["input_ids"][0])
    assert torch.equal(collate(examples)["labels"], together["labels"])  # whatever the global random state did
    first = torch.tensor(rows[0]["input_ids"])  # the longer row: no padding
    assert (together["labels"][0][torch.isin(first, torch.tensor(tok.all_special_ids))] == -100).all()  # [CLS], [SEP]
    assert (together["labels"] != -100).any()
    collate.set_epoch(1)
    assert not torch.equal(collate(examples)["labels"], together["labels"])  # a new epoch, new masks
    import pickle  # data-loader workers started by spawn or forkserver receive it pickled

    copy = pickle.loads(pickle.dumps(collate))
    assert torch.equal(copy(examples)["labels"], collate(examples)["labels"])
    assert EXAMPLE_INDEX not in together


@pytest.mark.slow
def test_pretrain_killed_and_resumed_ends_as_an_uninterrupted_run(tiny_dirs, tmp_path):
    full = run_pretrain(_cfg(tiny_dirs, tmp_path / "full"))
    with pytest.raises(_Kill):
        run_pretrain(_cfg(tiny_dirs, tmp_path / "cut"), callbacks=[_KillAfter(4)])
    assert (tmp_path / "cut" / "checkpoint-3").is_dir() and not (tmp_path / "cut" / "final").exists()
    r = run_pretrain(_cfg(tiny_dirs, tmp_path / "cut"), resume="auto")
    assert r.resumed_from.endswith("checkpoint-3") and r.global_step == full.global_step == 6
    a = load_file(tmp_path / "full" / "final" / "model.safetensors")
    b = load_file(tmp_path / "cut" / "final" / "model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("sets, needle", [
    (["distill.hidden_match=steps"], "distill.hidden_match: 'steps' needs a spiking BERT student on a GLUE task"),
    (["distill.augment.copies=1"], "distill.augment: augments GLUE tasks only"),
    (["neuron.kind=lif", "distill.spike_drop=0.5", "distill.spike_drop_steps=2"],
     "distill.spike_drop: acts on elastic bi-spiking neurons"),
    (["mlm.nsp=true", "distill.alpha_ce=0"], "with mlm.nsp the next-sentence head would never train"),
    (["train.eval_strategy=steps", "train.eval_steps=1"], "pretraining scores its held-out text (data.validation_file) once, after training"),
    (["data.train_file=more.txt"], "data.train_file: is not read by masked-LM training"),
    (["data.seq_len=64"], "data.seq_len: is not read by masked-LM training on text (data.max_length sets"),
    (["data.stride=8"], "data.stride: is not read by masked-LM training"),
], ids=["hidden-steps", "augment", "spike-drop-lif", "nsp-without-ce", "evaluation", "train-file", "seq-len", "stride"])
def test_settings_pretraining_would_ignore_are_refused(tiny_dirs, tmp_path, sets, needle):
    from spikelm_core.errors import ConfigError

    teacher = [] if sets[0].startswith(("train.", "data.")) else [f"distill.teacher={tiny_dirs['mlm_teacher']}"]
    with pytest.raises(ConfigError) as exc:
        _cfg(tiny_dirs, tmp_path / "x", *teacher, *sets)
    assert any(needle in d for d in exc.value.details), exc.value.details


def test_nsp_negatives_come_from_another_document(tiny_dirs, tmp_path):
    """Label 1 pairs take their second segment from another document (blank lines split documents),
    as BERT builds them; the pairs are the same under the same seed."""
    from transformers import AutoTokenizer

    from spikelm_core.data.text import mlm_dataset

    tok = AutoTokenizer.from_pretrained(tiny_dirs["dense"])
    docs = [" ".join(f"w{3 * d + i % 3}" for i in range(40)) for d in range(6)]  # each document its own words
    doc_of = {tok.convert_tokens_to_ids(f"w{3 * d + k}"): d for d in range(6) for k in range(3)}
    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(docs) + "\n")
    ds = mlm_dataset(corpus, tok, max_length=12, nsp=True, seed=1)
    negatives = [row for row in ds if row["next_sentence_label"] == 1]
    assert negatives and len(negatives) < len(ds)
    for row in ds:
        ids, types = row["input_ids"], row["token_type_ids"]
        a = {doc_of[t] for t, s in zip(ids, types) if s == 0 and t in doc_of}
        b = {doc_of[t] for t, s in zip(ids, types) if s == 1 and t in doc_of}
        assert len(a) == len(b) == 1 and (a != b) == (row["next_sentence_label"] == 1)
    again = mlm_dataset(corpus, tok, max_length=12, nsp=True, seed=1)
    assert again["input_ids"] == ds["input_ids"] and again["next_sentence_label"] == ds["next_sentence_label"]


def test_pretraining_logs_its_mlm_and_nsp_terms(tiny_dirs, tmp_path):
    import json

    result = run_pretrain(_cfg(tiny_dirs, tmp_path / "p", "train.max_steps=2", "train.logging_steps=1"))
    assert "over the 4 calibration sequences" in result.firing_rate_mean  # no held-out text: says which text
    logs = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in logs if "loss" in x]
    assert len(steps) == 2
    for x in steps:  # the logged loss is the sum of its two terms, each logged apart
        assert x["loss"] == pytest.approx(x["loss_mlm"] + x["loss_nsp"], abs=1e-3)


def test_heads_a_model_lacks_are_said_to_start_untrained(tiny_dirs, tmp_path, caplog):
    """From an encoder without pretraining heads (minilm, here the tiny dense BERT), the run says so."""
    with caplog.at_level("INFO", logger="spikelm"):
        run_pretrain(_cfg(tiny_dirs, tmp_path / "p", f"model={tiny_dirs['dense']}", "model_config=null",
                          "train.max_steps=1"))
    assert "the masked-LM and NSP heads start untrained" in caplog.text and "cls." in caplog.text


def test_masks_do_not_depend_on_the_padding_side(tiny_dirs):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_dirs["dense"])
    rows = [tok(t)["input_ids"] for t in ("farmers moved the old stone", "the river rose over the old stone bridge at dawn")]
    examples = [{"input_ids": r, EXAMPLE_INDEX: i} for i, r in enumerate(rows)]
    right = seeded_masking_collator(tok, 0.5, seed=3)(examples)
    tok.padding_side = "left"
    left = seeded_masking_collator(tok, 0.5, seed=3)(examples)
    n, width = len(rows[0]), right["labels"].shape[1]
    assert (right["labels"][0, :n] != -100).any()  # the short row has masks ...
    assert torch.equal(left["labels"][0, width - n:], right["labels"][0, :n])  # ... wherever its padding lies
    assert torch.equal(left["input_ids"][0, width - n:], right["input_ids"][0, :n])
    assert (left["labels"][0, :width - n] == -100).all()


def test_held_out_text_inside_the_training_text_is_said(tiny_dirs, tmp_path, caplog):
    """--text FOLDER with --held-out FOLDER/test.txt (or the same file twice): the held-out scores would be
    those of training text, which the run says."""
    folder = tmp_path / "text"
    folder.mkdir()
    (folder / "held.txt").write_text(tiny_dirs["corpus"].read_text())
    for i, (source, held) in enumerate(((tiny_dirs["corpus"], tiny_dirs["corpus"]), (folder, folder / "held.txt"))):
        caplog.clear()
        with caplog.at_level("WARNING", logger="spikelm"):
            run_pretrain(_cfg(tiny_dirs, tmp_path / f"out{i}", f"data.source={source}",
                              f"data.validation_file={held}", "train.max_steps=1"))
        assert "is also training text" in caplog.text and Path(held).name in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):
        run_pretrain(_cfg(tiny_dirs, tmp_path / "apart", f"data.validation_file={folder / 'held.txt'}",
                          "train.max_steps=1"))
    assert "is also training text" not in caplog.text
