"""Distillation options that make the twin transfer across tasks: TinyBERT-style augmentation labelled
by the teacher, and the staged schedule (hidden states first). Tiny models, hand-computed values."""

from __future__ import annotations

import json
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch

from spikelm_core.config import DistillConfig, load_config
from spikelm_core.data.augment import (FLAG, augment_dataset, copies_for, neighbour_table, replace_words,
                                       word_vocabulary)
from spikelm_core.errors import ConfigError
from spikelm_core.models.common import layer_local_gradients
from spikelm_core.neurons import BiSpikeNeuron, TernarySpike, spike_drop
from spikelm_core.training.losses import hidden_mse
from spikelm_core.training.trainers import teacher_labelled
from tests.training_fixtures import make_tiny_dense, tiny_dirs, tiny_tokenizer  # noqa: F401


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return tiny_tokenizer(tmp_path_factory.mktemp("tok") / "vocab.txt")


def test_word_vocabulary_keeps_letter_words_only(tok):
    words, continuation = word_vocabulary(tok)
    vocab = tok.get_vocab()
    assert words[vocab["river"]] and words[vocab["a"]] and not words[vocab["w7"]]
    assert not words[vocab["[CLS]"]] and not words[vocab["##a"]]
    assert continuation[vocab["##a"]] and not continuation[vocab["river"]]


def test_neighbour_table_is_the_cosine_nearest_other_word():
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [-1.0, 0.1], [0.7, 0.7]])
    words = np.array([True, True, True, True, False])  # row 4 is not a word: never a neighbour, no row
    table = neighbour_table(emb, words, 2)
    # cosines from row 0: row 1 0.994, row 2 0, row 3 -0.995 -> [1, 2]; from row 2: row 1 0.110,
    # row 3 0.0995, row 0 0 -> [1, 3]; from row 3: row 2 0.0995, row 1 -0.977 -> [2, 1]
    assert table[0].tolist() == [1, 2] and table[2].tolist() == [1, 3] and table[3].tolist() == [2, 1]
    assert table[4].tolist() == [-1, -1]
    with pytest.raises(ConfigError, match="neighbours"):
        neighbour_table(emb, words, 4)
    with pytest.raises(ConfigError, match="neighbours"):  # refused before its [V, k] table is allocated
        neighbour_table(emb, words, 2**40)


def test_replace_words_by_hand():
    # vocabulary: 0 [CLS], 1 cat, 2 dog, 3 ##s, 4 [SEP]; neighbours of cat: dog, of dog: cat
    table = np.array([[-1], [2], [1], [-1], [-1]])
    continuation = np.array([False, False, False, True, False])
    ids = [0, 1, 2, 3, 4]  # [CLS] cat dog ##s [SEP]: 'dogs' has two pieces and is kept
    rng = np.random.default_rng(0)
    assert replace_words(ids, table, continuation, 1.0, rng) == [0, 2, 2, 3, 4]
    assert replace_words(ids, table, continuation, 1e-9, np.random.default_rng(0)) == ids


def test_augmented_dataset_is_deterministic_and_keeps_shapes(tok):
    import datasets

    rows = tok(["the river rose", "a bridge of farmers", "it was on the bridge"], ["the river", "farmers", "a"])
    ds = datasets.Dataset.from_dict({**{k: list(v) for k, v in rows.items()}, "labels": [0.5, 1.0, 4.0]})
    emb = torch.randn(len(tok.get_vocab()), 8, generator=torch.Generator().manual_seed(0))
    one = augment_dataset(ds, tok, emb, copies=3, word_prob=0.5, neighbours=4, seed=7)
    two = augment_dataset(ds, tok, emb, copies=3, word_prob=0.5, neighbours=4, seed=7)
    other = augment_dataset(ds, tok, emb, copies=3, word_prob=0.5, neighbours=4, seed=8)
    assert len(one) == 12 and one[FLAG] == [0, 0, 0] + [1] * 9
    assert one["input_ids"] == two["input_ids"] and one["input_ids"] != other["input_ids"]
    assert one["input_ids"][:3] == ds["input_ids"]  # the originals first, unchanged
    for i in range(3, 12):
        src = i % 3
        assert len(one["input_ids"][i]) == len(ds["input_ids"][src])
        assert one["token_type_ids"][i] == ds["token_type_ids"][src] and one["labels"][i] == ds["labels"][src]
    changed = sum(a != b for i in range(3, 12) for a, b in zip(one["input_ids"][i], ds["input_ids"][i % 3]))
    assert changed > 0
    specials = set(tok.all_special_ids)
    for i in range(3, 12):  # special tokens never move
        assert [t for t in one["input_ids"][i] if t in specials] == [t for t in ds["input_ids"][i % 3] if t in specials]
    assert len(augment_dataset(ds, tok, emb, copies=0, word_prob=0.5, neighbours=4, seed=7)) == 3


def test_copies_for_min_examples():
    assert copies_for(100, 0, None) == 0
    assert copies_for(100, 2, None) == 2
    assert copies_for(5749, 0, 32000) == 5  # 6 x 5749 = 34494 >= 32000
    assert copies_for(40000, 0, 32000) == 0
    assert copies_for(100, 5, 150) == 5


def test_teacher_labelled_rows_take_the_teacher_prediction():
    flagged = torch.tensor([0, 1, 1])
    cls = teacher_labelled(torch.tensor([1, 1, 0]), torch.tensor([[0.2, 0.1], [3.0, -1.0], [0.0, 2.0]]), flagged.bool())
    assert cls.tolist() == [1, 0, 1] and cls.dtype == torch.long
    reg = teacher_labelled(torch.tensor([4.0, 1.0, 2.0]), torch.tensor([[0.5], [3.25], [-1.0]]), flagged.bool())
    assert reg.tolist() == [4.0, 3.25, -1.0]


def _distill_cfg(dirs, tmp_path, teacher, *extra):
    overrides = [f"model={teacher}", f"distill.teacher={teacher}", f"data.data_dir={dirs['glue']}", "data.max_length=16",
                 "neuron.num_timesteps=3", "train.batch_size=5", "train.eval_strategy=no", "train.keep_best=false",
                 "train.logging_steps=1", "train.lr=1e-3", *extra]
    return load_config(DistillConfig, "recipes/tiny/distill.yaml", overrides, out_dir=str(tmp_path / "run"))


def _sst2_step_logs(dirs, tmp_path, part: str, *extra) -> list[dict]:
    """Run a tiny SST-2 distillation and return its per-step logs that carry the loss part `part`."""
    from spikelm_core.training import run_distill

    run_distill(_distill_cfg(dirs, tmp_path, dirs["teacher"], "data.source=glue/sst2", *extra))
    logs = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    return [x for x in logs if f"loss_{part}" in x]


@pytest.mark.slow
@pytest.mark.parametrize("local", [False, True])
def test_staged_schedule_weighs_hidden_terms_first(tiny_dirs, tmp_path, local):
    steps = _sst2_step_logs(tiny_dirs, tmp_path, "kd", "train.max_steps=4", "distill.hidden_stage_steps=2",
                            "distill.alpha_kd=1.0", "distill.alpha_ce=0.5", "distill.alpha_hidden=0.25",
                            "distill.alpha_attn=0.0", f"distill.hidden_stage_local={str(local).lower()}")
    assert len(steps) == 4
    for x in steps[:2]:  # stage 1: the hidden-state term alone
        assert x["loss"] == pytest.approx(0.25 * x["loss_hidden"], rel=1e-4)
    for x in steps[2:]:  # stage 2: every term
        assert x["loss"] == pytest.approx(x["loss_kd"] + 0.5 * x["loss_ce"] + 0.25 * x["loss_hidden"], rel=1e-4)


@pytest.mark.slow
def test_a_stage_as_long_as_the_run_is_warned_of(tiny_dirs, tmp_path, caplog):
    with caplog.at_level("WARNING", logger="spikelm"):
        steps = _sst2_step_logs(tiny_dirs, tmp_path, "kd", "train.max_steps=2", "distill.hidden_stage_steps=2")
    assert len(steps) == 2
    assert "distill.hidden_stage_steps 2 covers the whole run of 2 steps" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="spikelm"):  # hidden states alone on purpose: nothing to join later
        _sst2_step_logs(tiny_dirs, tmp_path / "alone", "hidden", "train.max_steps=2", "distill.hidden_stage_steps=2",
                        "distill.alpha_kd=0", "distill.alpha_ce=0", "distill.alpha_hidden=1.0")
    assert "covers the whole run" not in caplog.text


@pytest.mark.slow
def test_calibration_examples_of_a_run(tiny_dirs, tmp_path, monkeypatch):
    """`train.calibration_examples` / `calibration_order` choose the batch the converted twin calibrates on,
    `calibration_tokens` what its means read."""
    from spikelm_core.training import pipeline, run_distill

    seen, tokens = [], []
    real = pipeline.calibrate
    modes = []
    monkeypatch.setattr(pipeline, "calibrate", lambda model, batch, **kw: (seen.append(batch), tokens.append(kw["tokens"]),
                                                                           modes.append(kw["mode"]),
                                                                           real(model, batch, **kw))[3])

    said = []

    def run(name, *extra):
        said.append(run_distill(_distill_cfg(tiny_dirs, tmp_path / name, tiny_dirs["teacher"], "data.source=glue/sst2",
                                             "train.max_steps=1", *extra)).calibration)
        return seen[-1]["input_ids"]

    first = run("first")
    assert first.shape[0] == 5  # one training batch by default
    drawn = run("random", "train.calibration_examples=7", "train.calibration_order=random")
    assert drawn.shape[0] == 7 and not torch.equal(drawn[:5, :first.shape[1]], first)
    assert torch.equal(run("again", "train.calibration_examples=7", "train.calibration_order=random"), drawn)
    assert said == ["the first training batch"] + ["7 training examples drawn at random (seed 42)"] * 2
    # with augmented copies the draw is over the originals alone: the same examples as without them
    assert torch.equal(run("augmented", "train.calibration_examples=7", "train.calibration_order=random",
                           "distill.augment.copies=3", "distill.augment.neighbours=3"), drawn)
    assert said.pop() == said[-1] and tokens.pop() == "all"
    assert tokens == ["all"] * 3
    assert torch.equal(run("real", "train.calibration_tokens=real"), first)
    assert tokens[-1] == "real" and said[-1] == "the first training batch, pads excluded"
    assert set(modes) == {"eval"}
    run("dropout", "train.calibration_mode=train")
    assert modes[-1] == "train" and said[-1] == "the first training batch, dropout on"


@pytest.mark.slow
def test_attention_kl_term_in_a_run(tiny_dirs, tmp_path):
    steps = _sst2_step_logs(tiny_dirs, tmp_path, "attn", "train.max_steps=2", "distill.alpha_kd=1.0",
                            "distill.alpha_ce=0.0", "distill.alpha_hidden=0.0", "distill.alpha_attn=2.0",
                            "distill.attn_loss=kl")
    assert len(steps) == 2
    for x in steps:  # a spiking student's attention differs from its dense teacher's: KL > 0
        assert x["loss_attn"] > 0
        # the logs round to 6 decimals, and the undropped maps of a twin put the terms near 1e-4
        assert x["loss"] == pytest.approx(x["loss_kd"] + 2.0 * x["loss_attn"], rel=1e-4, abs=2e-6)


@pytest.mark.slow
def test_augmented_regression_run(tiny_dirs, tmp_path):
    from spikelm_core.training import run_distill

    teacher = make_tiny_dense(tmp_path / "stsb-teacher", "cls", num_labels=1, seed=3)
    cfg = _distill_cfg(tiny_dirs, tmp_path, teacher, "data.source=glue/stsb", "train.epochs=1", "train.max_steps=-1",
                       "distill.augment.min_examples=60", "distill.augment.word_prob=0.5",
                       "distill.augment.neighbours=3")
    result = run_distill(cfg)
    assert result.global_step == 14  # 23 pairs + 2 copies = 69 rows, batch 5
    assert math.isfinite(next(iter(result.metrics.values()))["pearson"])
    assert "augment" in (tmp_path / "run" / "run_config.yaml").read_text()


def test_option_rules():
    base = ["model=m", "distill.teacher=t"]
    with pytest.raises(ConfigError, match="augments GLUE tasks only"):
        load_config(DistillConfig, None, [*base, "data.source=corpus.txt", "distill.augment.copies=2"])
    with pytest.raises(ConfigError, match="hidden_stage_steps"):
        load_config(DistillConfig, None, [*base, "data.task=sst2", "distill.alpha_hidden=0", "distill.hidden_stage_steps=5"])
    cfg = load_config(DistillConfig, None, [*base, "data.task=sst2", "distill.augment.min_examples=100"])
    assert cfg.distill.augment.enabled and not DistillConfig.model_fields["distill"].default_factory().augment.enabled
    with pytest.raises(ConfigError, match="hidden_match"):
        load_config(DistillConfig, None, [*base, "data.source=corpus.txt", "distill.hidden_match=steps"])


def test_hidden_mse_per_time_step_by_hand():
    teacher = torch.zeros(1, 2, 2)                                        # B=1, L=2, D=2
    steps = torch.stack([torch.ones(1, 2, 2), 3 * torch.ones(1, 2, 2)])  # T=2: every entry 1, then 3
    steps[:, 0, 1] = 100.0                                                # a padded position: ignored
    mask = torch.tensor([[1, 0]])
    assert hidden_mse((steps,), (teacher,), mask).item() == pytest.approx(5.0)        # (1 + 9) / 2
    assert hidden_mse((steps.mean(0),), (teacher,), mask).item() == pytest.approx(4.0)  # 2^2
    with pytest.raises(ValueError, match="shapes differ"):
        hidden_mse((torch.zeros(2, 1, 3, 2),), (teacher,), None)


@pytest.mark.slow
def test_per_step_matching_runs_and_costs_at_least_the_mean(tiny_dirs, tmp_path):
    """Jensen: the mean over steps of the squared error is never below the squared error of the mean."""
    from spikelm_core.training import run_distill

    first = {}
    for match in ("mean", "steps"):
        cfg = _distill_cfg(tiny_dirs, tmp_path / match, tiny_dirs["teacher"], "data.source=glue/sst2",
                           "train.max_steps=1", f"distill.hidden_match={match}", "distill.alpha_hidden=1.0")
        run_distill(cfg)
        logs = [json.loads(x) for x in (tmp_path / match / "run" / "metrics.jsonl").read_text().splitlines()]
        first[match] = next(x for x in logs if "loss_hidden" in x)["loss_hidden"]
    assert first["steps"] > first["mean"] > 0


def _tiny_spiking_bert(seed: int = 0):
    from spikelm_core.models.spiking_bert import SpikingBertConfig, SpikingBertModel

    torch.manual_seed(seed)
    config = SpikingBertConfig(vocab_size=31, hidden_size=10, num_hidden_layers=3, num_attention_heads=2,
                               intermediate_size=14, max_position_embeddings=16, num_timesteps=2,
                               hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = SpikingBertModel(config).eval()
    ids = torch.randint(1, 31, (2, 5))
    model(input_ids=ids)  # calibrates every neuron on this batch
    return model, ids


def _grads_of_layer_loss(model, ids, layer: int, local: bool) -> dict[int, float]:
    """Gradient norm per encoder layer of a loss on layer `layer`'s output state."""
    model.zero_grad()
    with layer_local_gradients(model) if local else nullcontext():
        states = model(input_ids=ids, output_hidden_states=True).hidden_states
    states[layer + 1].pow(2).mean().backward()
    return {i: sum(float(p.grad.norm()) for p in m.parameters() if p.grad is not None)
            for i, m in enumerate(model.encoder.layer)}


def test_layer_local_gradients_train_each_layer_on_its_own_term():
    model, ids = _tiny_spiking_bert()
    spread = _grads_of_layer_loss(model, ids, 2, local=False)
    assert spread[0] > 0 and spread[1] > 0 and spread[2] > 0  # through the straight-through spikes
    local = _grads_of_layer_loss(model, ids, 2, local=True)
    assert local[0] == 0 and local[1] == 0 and local[2] == pytest.approx(spread[2], rel=1e-6)
    assert model.embeddings.word_embeddings.weight.grad is None or not model.embeddings.word_embeddings.weight.grad.any()
    # the forward is unchanged, and leaving the block removes the hooks
    with torch.no_grad(), layer_local_gradients(model):
        inside = model(input_ids=ids).last_hidden_state
    with torch.no_grad():
        outside = model(input_ids=ids).last_hidden_state
    assert torch.equal(inside, outside)
    assert _grads_of_layer_loss(model, ids, 2, local=False)[0] == pytest.approx(spread[0], rel=1e-6)


def test_local_stage_option_rule():
    base = ["model=m", "distill.teacher=t", "data.task=sst2", "distill.alpha_hidden=1"]
    with pytest.raises(ConfigError, match="hidden_stage_local"):
        load_config(DistillConfig, None, [*base, "distill.hidden_stage_local=true"])
    cfg = load_config(DistillConfig, None, [*base, "distill.hidden_stage_local=true", "distill.hidden_stage_steps=3"])
    assert cfg.distill.hidden_stage_local


@pytest.mark.parametrize("channel_scale", [False, True])
def test_spike_drop_passes_inputs_on_with_its_probability(channel_scale):
    torch.manual_seed(0)
    neuron = BiSpikeNeuron(num_timesteps=2, channel_scale=channel_scale)
    stateless = TernarySpike(num_timesteps=2)
    model = torch.nn.ModuleList([neuron, stateless]).train()
    x = torch.randn(2, 400, 16)
    neuron.calibrate(x), stateless.calibrate(x)
    spikes, spikes_kv = neuron(x), stateless(x)
    xg = x.clone().requires_grad_(True)
    with spike_drop(model, 0.3):
        mixed = neuron(xg)
        mixed_kv = stateless(x)
        with torch.no_grad():
            model.eval()
            assert torch.equal(neuron(x), spikes)  # evaluation never drops
            model.train()
    passed = (mixed == x) & (spikes != x)
    assert torch.equal(torch.where(passed, x, spikes), mixed.detach())  # every element: its spike or its input
    assert float(passed.float().mean()) == pytest.approx(0.3 * float((spikes != x).float().mean()), abs=0.02)
    assert float(((mixed_kv == x) & (spikes_kv != x)).float().mean()) == pytest.approx(0.3, abs=0.02)
    # a passed element's own gradient is the identity (at the last step, where no later membrane adds to it)
    mixed.sum().backward()
    assert passed[-1].any() and torch.all(xg.grad[-1][passed[-1]] == 1)
    assert torch.equal(neuron(x), spikes)  # leaving the block restores plain spikes
    with spike_drop(model, 0.0):
        assert torch.equal(neuron(x), spikes)
    with pytest.raises(ValueError, match="spike_drop"):
        spike_drop(model, 1.0)


def test_spike_drop_schedule_and_rules():
    base = ["model=m", "distill.teacher=t", "data.task=sst2"]
    cfg = load_config(DistillConfig, None, [*base, "distill.spike_drop=0.5", "distill.spike_drop_steps=4"])
    # 0.5 * (1 - step / 4): 0.5, 0.375, 0.25, 0.125, then 0
    assert [cfg.distill.spike_drop_at(s) for s in range(6)] == [0.5, 0.375, 0.25, 0.125, 0.0, 0.0]
    assert load_config(DistillConfig, None, base).distill.spike_drop_at(0) == 0.0
    with pytest.raises(ConfigError, match="spike_drop_steps"):
        load_config(DistillConfig, None, [*base, "distill.spike_drop=0.5"])
    with pytest.raises(ConfigError, match="elastic bi-spiking"):
        load_config(DistillConfig, None, [*base, "distill.spike_drop=0.5", "distill.spike_drop_steps=4",
                                          "neuron.kind=lif"])
    with pytest.raises(ConfigError, match="target_firing_rate"):
        load_config(DistillConfig, None, [*base, "distill.spike_drop=0.5", "distill.spike_drop_steps=4",
                                          "train.target_firing_rate=0.2"])


@pytest.mark.slow
def test_spike_drop_acts_on_the_first_steps_of_a_run(tiny_dirs, tmp_path, monkeypatch):
    """The trainer opens `spike_drop` with the schedule's probability for the student's forwards of the
    first `spike_drop_steps` steps only (and the whole run still trains)."""
    from spikelm_core.training import trainers

    seen = []
    real = trainers.spike_drop

    def recording(model, p):
        seen.append(p)
        return real(model, p)

    monkeypatch.setattr(trainers, "spike_drop", recording)
    steps = _sst2_step_logs(tiny_dirs, tmp_path, "kd", "train.max_steps=4", "distill.spike_drop=0.4",
                            "distill.spike_drop_steps=2")
    assert seen == [pytest.approx(0.4), pytest.approx(0.2)] and len(steps) == 4


@pytest.mark.slow
def test_hidden_stage_lr_scale_multiplies_the_stage_learning_rate(tiny_dirs, tmp_path):
    """A constant lr of 1e-3, a 2-step stage at 3x: the first two steps train at 3e-3, the next at 1e-3."""
    steps = _sst2_step_logs(tiny_dirs, tmp_path, "kd", "train.max_steps=4", "train.lr_schedule=constant",
                            "distill.hidden_stage_steps=2", "distill.hidden_stage_lr_scale=3", "distill.alpha_hidden=0.5")
    assert [x["learning_rate"] for x in steps] == pytest.approx([3e-3, 3e-3, 1e-3, 1e-3])
    with pytest.raises(ConfigError, match="hidden_stage_lr_scale"):
        load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.task=sst2",
                                          "distill.hidden_stage_lr_scale=3"])


@pytest.mark.slow
def test_max_epochs_caps_max_steps_by_the_data(tiny_dirs, tmp_path):
    """`train.max_epochs`: 23 training sentences in batches of 5 are 5 steps a pass, so 1.5 passes stop a
    20-step run after 8 steps (and the linear schedule reaches 0 there); a cap above max_steps changes nothing."""
    steps = _sst2_step_logs(tiny_dirs, tmp_path / "a", "kd", "train.max_steps=20", "train.max_epochs=1.5",
                            "train.lr_schedule=linear")
    assert [x["step"] for x in steps] == list(range(1, 9))
    assert steps[-1]["learning_rate"] == pytest.approx(1e-3 / 8)
    steps = _sst2_step_logs(tiny_dirs, tmp_path / "b", "kd", "train.max_steps=3", "train.max_epochs=2")
    assert [x["step"] for x in steps] == [1, 2, 3]
    with pytest.raises(ConfigError, match="max_epochs"):
        _distill_cfg(tiny_dirs, tmp_path / "c", tiny_dirs["teacher"], "train.max_steps=-1", "train.max_epochs=2")


@pytest.mark.slow
def test_a_twin_starts_from_another_twins_weights_reconverted(tiny_dirs, tmp_path):
    """`reconvert`: a T=1 twin from a trained T=3 twin's final/: its weights, new amplitudes calibrated on
    the first training batch (one per step of the new T), while without the flag the T=3 checkpoint refuses T=1."""
    from safetensors.torch import load_file

    from spikelm_core.training import run_distill

    run_distill(_distill_cfg(tiny_dirs, tmp_path / "a", tiny_dirs["teacher"], "data.source=glue/sst2",
                             "train.max_steps=2"))
    first = tmp_path / "a" / "run" / "final"
    with pytest.raises(ConfigError, match="neuron.num_timesteps: checkpoint 3, asked 1"):
        run_distill(_distill_cfg(tiny_dirs, tmp_path / "b", tiny_dirs["teacher"], "data.source=glue/sst2",
                                 "train.max_steps=1", f"model={first}", "neuron.num_timesteps=1"))
    cfg = _distill_cfg(tiny_dirs, tmp_path / "c", tiny_dirs["teacher"], "data.source=glue/sst2", "train.max_steps=1",
                       "train.lr=1e-12", f"model={first}", "neuron.num_timesteps=1", "reconvert=true")
    assert cfg.model == str(first)
    run_distill(cfg)
    before = load_file(str(first / "model.safetensors"))
    after = load_file(str(tmp_path / "c" / "run" / "final" / "model.safetensors"))
    weight = "bert.encoder.layer.0.intermediate.dense.weight"
    alpha = "bert.encoder.layer.0.intermediate.dense.neuron.alpha"
    assert torch.allclose(after[weight], before[weight], atol=1e-6)  # lr 1e-12: the weights it started from
    assert before[alpha].shape == (3,) and after[alpha].shape == (1,) and after[alpha][0] > 0
    assert json.loads((tmp_path / "c" / "run" / "final" / "config.json").read_text())["num_timesteps"] == 1


def test_reinitialise_draws_every_weight_afresh_from_the_seed(tiny_dirs):
    """`model_init: random`: the checkpoint's architecture and tokenizer, weights from BERT's own
    initialisation (normal(0, 0.02), LayerNorm 1 and 0), the same under one seed, other under another."""
    from spikelm_core.checkpoints import load_model, reinitialise

    def fresh(seed):
        loaded = load_model(tiny_dirs["teacher"], head="sequence_classification", num_labels=2)
        loaded.converted = False  # as a calibrated spiking checkpoint loads
        return loaded, reinitialise(loaded, seed).model.state_dict()

    trained = load_model(tiny_dirs["teacher"], head="sequence_classification", num_labels=2).model.state_dict()
    loaded, a = fresh(7)
    _, b = fresh(7)
    _, c = fresh(8)
    assert loaded.converted and loaded.weights is None  # so the pipeline calibrates again
    weights = [k for k in a if k.endswith(".weight") and "LayerNorm" not in k and "neuron" not in k]
    assert len(weights) > 10
    for k in weights:
        assert torch.equal(a[k], b[k]) and not torch.equal(a[k], c[k]) and not torch.equal(a[k], trained[k]), k
    linear = torch.cat([a[k].flatten() for k in weights if "embeddings" not in k])
    assert linear.mean().abs() < 2e-3 and linear.std() == pytest.approx(0.02, rel=0.05)
    norms = [k for k in a if "LayerNorm.weight" in k]
    assert norms and all(torch.equal(a[k], torch.ones_like(a[k])) for k in norms)
    assert all(torch.equal(a[k.replace("weight", "bias")], torch.zeros_like(a[k])) for k in norms)


@pytest.mark.slow
def test_a_run_from_random_weights_starts_from_the_seeded_initialisation(tiny_dirs, tmp_path):
    """A distillation run with `model_init: random` (lr 1e-12, one step) ends at the weights
    `reinitialise` draws from train.seed, not at the checkpoint's."""
    from safetensors.torch import load_file

    from spikelm_core.checkpoints import load_model, reinitialise
    from spikelm_core.training import run_distill

    run_distill(_distill_cfg(tiny_dirs, tmp_path, tiny_dirs["teacher"], "data.source=glue/sst2", "train.max_steps=1",
                             "train.lr=1e-12", "model_init=random", "train.seed=5"))
    after = load_file(str(tmp_path / "run" / "final" / "model.safetensors"))
    drawn = reinitialise(load_model(tiny_dirs["teacher"], head="sequence_classification", num_labels=2), 5)
    start = drawn.model.state_dict()
    weight = "bert.encoder.layer.0.intermediate.dense.weight"
    assert torch.allclose(after[weight], start[weight], atol=1e-6)
    teacher = load_file(str(tiny_dirs["teacher"] / "model.safetensors"))
    assert not torch.allclose(after[weight], teacher[weight], atol=1e-3)
    with pytest.raises(ConfigError, match="model_init"):
        load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.task=sst2", "model_init=zeros"])
