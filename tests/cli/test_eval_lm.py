"""`spikelm eval` on a causal LM: perplexity (`--task wikitext2`) dense and spiking on the same windows,
generation (`--prompt`), and their bad inputs, on a tiny odd-sized Llama."""

from __future__ import annotations

import json
import re
import random
import shutil

import pytest
import torch
from typer.testing import CliRunner

from spikelm_cli.main import app
from tests.cli.test_bad_input import refused
from tests.core.evaluation.test_perplexity import _by_hand

runner = CliRunner()
WORDS = "the a of and to in is was it for on that with as at by river rose bridge farmers".split()
T3 = ["-s", "neuron.num_timesteps=3"]


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
    """Running text of 300 in-vocabulary words on lines of 5 to 15."""
    rng = random.Random(0)
    lines, n = [], 0
    while n < 300:
        k = min(rng.randint(5, 15), 300 - n)
        lines.append(" ".join(rng.choice(WORDS) for _ in range(k)))
        n += k
    path = tmp_path_factory.mktemp("lm_text") / "essay.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def spiking_dir(tiny_dense_llama_dir, tmp_path_factory):
    """The tiny Llama converted as eval converts it on the fly (T=3, calibration batch of 64 positions)."""
    from spikelm_core.conversion import convert_model
    from spikelm_core.neurons.settings import NeuronSettings

    out = tmp_path_factory.mktemp("lm_spiking") / "model"
    convert_model(tiny_dense_llama_dir, out, NeuronSettings(num_timesteps=3), seq_len=64)
    return out


def _json(*args):
    res = runner.invoke(app, ["eval", *map(str, args), "--format", "json"])
    assert res.exit_code == 0, (res.stdout, res.stderr)
    return json.loads(res.stdout)


def _dense_by_hand(model_dir, text_file, seq_len):
    from transformers import AutoTokenizer, LlamaForCausalLM

    ids = AutoTokenizer.from_pretrained(model_dir)(text_file.read_text(), add_special_tokens=False)["input_ids"]
    return _by_hand(LlamaForCausalLM.from_pretrained(model_dir).eval(), ids, seq_len)


def test_perplexity_dense_and_spiking_on_identical_windows(tiny_dense_llama_dir, text_file):
    r = _json(tiny_dense_llama_dir, "--task", "wikitext2", "--data-dir", text_file, "--seq-len", 16, *T3)
    expected, count = _dense_by_hand(tiny_dense_llama_dir, text_file, 16)
    assert count == 300
    assert r["schema"] == "spikelm.eval/2" and r["task"] == "wikitext2" and r["primary_metric"] == "perplexity"
    assert (r["tokens"], r["seq_len"], r["stride"], r["converted"]) == (300, 16, 15, True)
    assert r["dense_model"] == str(tiny_dense_llama_dir)
    assert r["dense_perplexity"] == pytest.approx(expected, rel=1e-5)  # the dense model, on the same windows
    assert r["perplexity"] > 1 and r["perplexity"] != r["dense_perplexity"]
    test = r["metrics"]["test"]
    assert (test["tokens"], test["windows"], r["examples"]["test"]) == (300, 20, 300)
    assert test["perplexity"] == r["perplexity"] and test["dense_nll"] == pytest.approx(torch.tensor(expected).log().item())
    assert 0 < r["firing_rate"] < 1 and list(r["layer_firing_rates"]) == ["layers.0", "layers.1"]
    assert r["tokens_per_second"] > 0 and r["dense_tokens_per_second"] > 0

    dense = _json(tiny_dense_llama_dir, "--task", "wikitext2", "--data-dir", text_file, "--seq-len", 16,
                  "-s", "neuron.kind=dense")
    assert dense["perplexity"] == pytest.approx(expected, rel=1e-5)
    assert dense["dense_perplexity"] is None and dense["firing_rate"] is None and dense["converted"] is False


def test_a_spiking_checkpoint_with_its_dense_reference(tiny_dense_llama_dir, spiking_dir, text_file):
    common = ["--task", "wikitext2", "--data-dir", text_file, "--seq-len", 16]
    alone = _json(spiking_dir, *common)
    assert alone["dense_perplexity"] is None and alone["dense_model"] is None and alone["converted"] is False
    compared = _json(spiking_dir, *common, "--dense", tiny_dense_llama_dir)
    on_the_fly = _json(tiny_dense_llama_dir, *common, *T3)
    # converted here = its converted copy (same calibration), compared on the same windows
    assert compared["perplexity"] == pytest.approx(on_the_fly["perplexity"], rel=1e-6) == alone["perplexity"]
    assert compared["dense_perplexity"] == pytest.approx(on_the_fly["dense_perplexity"], rel=1e-6)
    assert compared["layer_firing_rates"] == pytest.approx(on_the_fly["layer_firing_rates"])


def test_sliding_windows_and_a_token_cap(tiny_dense_llama_dir, text_file):
    common = [tiny_dense_llama_dir, "--task", "wikitext2", "--data-dir", text_file, "--seq-len", 16, *T3]
    sliding = _json(*common, "--stride", 5, "--max-tokens", 100)
    assert (sliding["tokens"], sliding["stride"]) == (100, 5)
    assert sliding["metrics"]["test"]["windows"] == 1 + 17  # 15 tokens, then 5 new ones per window
    capped = _json(*common, "--max-tokens", 100)
    assert capped["tokens"] == 100 and capped["metrics"]["test"]["windows"] == 7
    assert sliding["perplexity"] != capped["perplexity"]


def test_table_output_shows_perplexities_throughput_and_progress(tiny_dense_llama_dir, text_file):
    res = runner.invoke(app, ["eval", str(tiny_dense_llama_dir), "--task", "wikitext2", "--data-dir", str(text_file),
                              "--seq-len", "16", *T3])
    assert res.exit_code == 0, res.stderr
    assert "perplexity" in res.stdout and "dense reference" in res.stdout and "tokens/s" in res.stdout
    assert re.search(r"per layer: 0\.\d{3} 0\.\d{3}\n", res.stdout)  # one stack: its layers in order
    assert "test, spiking: windows 20/20" in res.stderr and "test, dense: windows 20/20" in res.stderr
    assert "windows: 16 positions (BOS included)" in res.stdout


def test_windows_of_a_tokenizer_without_bos_are_said_to_have_none(tiny_dense_llama_dir, text_file, tmp_path):
    model = tmp_path / "nobos"
    shutil.copytree(tiny_dense_llama_dir, model)
    tok_config = json.loads((model / "tokenizer_config.json").read_text())
    (model / "tokenizer_config.json").write_text(json.dumps({**tok_config, "bos_token": None}))
    args = ["eval", str(model), "--task", "wikitext2", "--data-dir", str(text_file), "--seq-len", "16",
            "--max-tokens", "64", "-s", "neuron.kind=dense"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.stderr
    assert "windows: 16 positions (no BOS token: the tokenizer has none)" in res.stdout
    res = runner.invoke(app, [*args, "--format", "json"])
    assert json.loads(res.stdout)["window_bos"] is False


def test_the_shared_wikitext_test_split(tiny_dense_llama_dir, shared_data):
    r = _json(tiny_dense_llama_dir, "--task", "wikitext2", "--data-dir", shared_data / "text", "--seq-len", 32,
              "--max-tokens", 200, "-s", "neuron.kind=dense")
    assert r["tokens"] == 200 and r["metrics"]["test"]["windows"] == 7


def test_firing_picture_of_a_window(tiny_dense_llama_dir, text_file, tmp_path):
    png = tmp_path / "f.png"
    res = runner.invoke(app, ["eval", str(tiny_dense_llama_dir), "--task", "wikitext2", "--data-dir", str(text_file),
                              "--seq-len", "16", *T3, "--plot-firing", str(png), "--firing-example", "1"])
    assert res.exit_code == 0, res.stderr
    (panel,) = json.loads(png.with_suffix(".json").read_text())["panels"]
    assert len(panel["tokens"]) == 16 and panel["tokens"][0] == "<s>"
    assert panel["layers"] == ["layers.0", "layers.1"]


# ------------------------------------------------------------------------------------ generation

def test_generation_with_a_seed_is_repeatable_and_timed(tiny_dense_llama_dir):
    args = [tiny_dense_llama_dir, "--prompt", "the river rose", "--max-new-tokens", 6, "--temperature", 0.9,
            "--seed", 3, *T3]
    first, second = _json(*args), _json(*args)
    assert first["text"] == second["text"] and first["tokens"] == 6
    assert first["schema"] == "spikelm.generation/1" and first["prompt_tokens"] == 4  # <s> the river rose
    assert first["seconds"] > 0 and first["tokens_per_second"] == pytest.approx(6 / first["seconds"])
    assert first["decoding"] == {"sample": True, "temperature": 0.9, "top_p": 1.0, "seed": 3, "max_new_tokens": 6}
    assert first["timesteps"] == 3 and first["dense"] is None and first["finish_reason"] == "length"
    other = _json(*args[:-4], "--seed", 4, *T3)
    assert other["text"] != first["text"]


def test_generation_compares_with_the_dense_model(tiny_dense_llama_dir, spiking_dir):
    from transformers import AutoTokenizer, LlamaForCausalLM

    r = _json(spiking_dir, "--prompt", "the river", "--max-new-tokens", 5, "--compare-dense", "--dense",
              tiny_dense_llama_dir)
    tok = AutoTokenizer.from_pretrained(tiny_dense_llama_dir)
    model = LlamaForCausalLM.from_pretrained(tiny_dense_llama_dir).eval()
    greedy = model.generate(torch.tensor([[1, *tok("the river", add_special_tokens=False)["input_ids"]]]),
                            max_new_tokens=5, do_sample=False)
    assert r["dense"]["text"] == tok.decode(greedy[0, 3:], skip_special_tokens=True)
    assert r["dense"]["spiking"] is False and r["dense"]["model"] == str(tiny_dense_llama_dir)
    res = runner.invoke(app, ["eval", str(spiking_dir), "--prompt", "the river", "--max-new-tokens", "5",
                              "--compare-dense", "--dense", str(tiny_dense_llama_dir), "--out-dir", str(out := spiking_dir.parent / "gen")])
    assert res.exit_code == 0 and "tokens/s" in res.stdout and "(dense)" in res.stdout and "T=3" in res.stdout
    saved = json.loads((out / "generation_results.json").read_text())  # --out-dir keeps the result
    assert saved["text"] == r["text"] and saved["dense"]["text"] == r["dense"]["text"]
    assert (out / "eval_config.yaml").is_file()


def test_chat_template(tiny_dense_llama_dir, tmp_path):
    from transformers import AutoTokenizer

    chat_dir = tmp_path / "chat"
    shutil.copytree(tiny_dense_llama_dir, chat_dir)
    tok = AutoTokenizer.from_pretrained(chat_dir)
    tok.chat_template = ("{% for m in messages %}<s> {{ m['content'] }} </s>{% endfor %}"
                         "{% if add_generation_prompt %} <s>{% endif %}")
    tok.save_pretrained(chat_dir)
    r = _json(chat_dir, "--chat", "--prompt", "the river", "--max-new-tokens", 3, *T3)
    assert r["chat"] is True and r["prompt_tokens"] == 5  # <s> the river </s> <s>


# ------------------------------------------------------------------------------------ bad input

def _short(tmp_path):
    f = tmp_path / "short.txt"
    f.write_text("the river rose by the bridge\n")
    return f


BAD = {
    "text shorter than a window": (lambda d, t: [d, "--task", "wikitext2", "--data-dir", t, "--seq-len", 16],
                                   4, ["holds 6 tokens, fewer than one window", "needs 15 text tokens"]),
    "seq-len above the context": (lambda d, t: [d, "--task", "wikitext2", "--data-dir", t, "--seq-len", 65],
                                  2, ["--seq-len 65 (data.seq_len) exceeds the model's context", "64 positions"]),
    "max-tokens below a window": (lambda d, t: [d, "--task", "wikitext2", "--data-dir", t, "--max-tokens", 10],
                                  2, ["--max-tokens 10 is less than one window"]),
    "stride wider than a window": (lambda d, t: [d, "--task", "wikitext2", "--data-dir", t, "--seq-len", 16,
                                                 "--stride", 16], 2, ["--stride 16 does not fit --seq-len 16"]),
    "no local text offline": (lambda d, t: [d, "--task", "wikitext2"], 4, ["hub is offline", "--data-dir"]),
    "empty prompt": (lambda d, t: [d, "--prompt", "  "], 2, ["prompt.text: must not be empty"]),
    "chat without a template": (lambda d, t: [d, "--prompt", "hi", "--chat"], 2, ["has no chat template"]),
    "generation flags without a prompt": (lambda d, t: [d, "--chat", "--max-new-tokens", 3], 2,
                                          ["--max-new-tokens, --chat are for generation: add --prompt"]),
    "greedy and sampling": (lambda d, t: [d, "--prompt", "hi", "--greedy", "--temperature", 0.7], 2, ["choose one"]),
    "prompt and a task": (lambda d, t: [d, "--prompt", "hi", "--task", "wikitext2"], 2, ["give one of them"]),
    "window options with a prompt": (lambda d, t: [d, "--prompt", "hi", "--seq-len", 8], 2,
                                     ["--seq-len: --prompt generates text"]),
    "data-dir with a prompt": (lambda d, t: [d, "--prompt", "hi", "--data-dir", t], 2,
                               ["--data-dir: --prompt generates text"]),
    "dense without compare-dense": (lambda d, t: [d, "--prompt", "hi", "--dense", d], 2,
                                    ["--dense names the model --compare-dense", "add --compare-dense"]),
    "compare-dense on a dense model": (lambda d, t: [d, "--prompt", "hi", "--compare-dense", "-s", "neuron.kind=dense"],
                                       2, ["no dense model to compare"]),
    "prompt longer than the context": (lambda d, t: [d, "--prompt", "the " * 40, "--max-new-tokens", 30], 2,
                                       ["exceed the model's 64 positions"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input(case, tiny_dense_llama_dir, tmp_path):
    args, code, needles = BAD[case]
    res = runner.invoke(app, ["eval", *map(str, args(tiny_dense_llama_dir, _short(tmp_path)))])
    refused(res, code, *needles)
    assert res.stdout == ""


def _without_eos(model_dir, out):
    """A copy of `model_dir` whose generation never stops at an end-of-sequence token."""
    import shutil

    shutil.copytree(model_dir, out)
    for name in ("config.json", "generation_config.json"):
        if (out / name).is_file():
            cfg = json.loads((out / name).read_text())
            cfg["eos_token_id"] = None
            (out / name).write_text(json.dumps(cfg))
    return out


def test_a_prompt_may_fill_the_context_as_energy_counts_it(tiny_dense_llama_dir, spiking_dir, tmp_path):
    """The last new token is never read back: a prompt of L tokens may ask for 64 - L + 1 new ones on
    a 64-position model (`spikelm energy`'s --seq-len + --target-len - 1 <= 64), beside its dense
    reference too; one more is refused, naming what fits; a prompt alone too long is told to shorten."""
    from transformers import AutoTokenizer

    from spikelm_core.training.causal_lm import prompt_ids

    dense, spiking = _without_eos(tiny_dense_llama_dir, tmp_path / "dense"), _without_eos(spiking_dir, tmp_path / "spiking")
    length = len(prompt_ids(AutoTokenizer.from_pretrained(dense), "the river", chat=False))
    fits = 64 - length + 1
    r = _json(spiking, "--prompt", "the river", "--max-new-tokens", fits, "--compare-dense", "--dense", dense)
    assert r["tokens"] == r["dense"]["tokens"] == fits and r["finish_reason"] == "length"
    refused(runner.invoke(app, ["eval", str(dense), "--prompt", "the river", "--max-new-tokens", str(fits + 1)]),
            2, "exceed the model's 64 positions", f"--max-new-tokens {fits} or less")
    refused(runner.invoke(app, ["eval", str(dense), "--prompt", "the " * 70, "--max-new-tokens", "1"]),
            2, "exceed the model's 64 positions", "shorten the prompt by at least 7 tokens")


def test_a_prompt_needs_a_causal_lm(tiny_dense_bert_dir):
    # (a BERT on --task wikitext2 is scored as a masked LM: tests/cli/test_eval_mlm.py)
    refused(runner.invoke(app, ["eval", str(tiny_dense_bert_dir), "--prompt", "hi"]), 3,
            "--prompt needs a causal (decoder-only) LM", "is a BERT model")


def test_a_llama_without_its_lm_head_is_refused_for_scores_and_text(text_file, tmp_path):
    """A LlamaModel saved without its head (untied embeddings) would score and generate through a
    random head: refused with exit 3, for the model and for a dense reference."""
    from transformers import LlamaConfig, LlamaModel

    from tests.conftest import LLAMA_TINY, tiny_llama_tokenizer

    base = tmp_path / "base"
    torch.manual_seed(0)
    LlamaModel(LlamaConfig(**LLAMA_TINY)).save_pretrained(base)
    tiny_llama_tokenizer().save_pretrained(base)
    for args, what in ((["--task", "wikitext2", "--data-dir", str(text_file), "--seq-len", "16"], "its perplexity"),
                       (["--prompt", "the river"], "its continuation")):
        refused(runner.invoke(app, ["eval", str(base), *args]), 3, "has no language-modelling head (lm_head.weight",
                f"{what} would come from a randomly initialised head")


def test_a_spiking_dense_reference_is_refused_before_scoring(spiking_dir, text_file):
    res = runner.invoke(app, ["eval", str(spiking_dir), "--task", "wikitext2", "--data-dir", str(text_file),
                              "--seq-len", "16", "--dense", str(spiking_dir)])
    refused(res, 3, "the dense reference", "is a spiking model")
    assert "windows" not in res.stderr  # nothing was scored


def test_finetune_on_the_language_modelling_task_needs_a_causal_lm(tiny_dense_bert_dir, text_file, tmp_path):
    res = runner.invoke(app, ["finetune", "--task", "wikitext2", "--model", str(tiny_dense_bert_dir), "--data-dir",
                              str(text_file), "--out-dir", str(tmp_path / "x"), "-s", "data.max_length=16"])
    refused(res, 3, "finetune --task wikitext2 needs a causal (decoder-only) LM")
    assert not (tmp_path / "x").exists()


def test_a_dense_reference_or_teacher_with_fewer_positions_is_refused(tiny_dense_llama_dir, spiking_dir, text_file,
                                                                       tmp_path):
    short = tmp_path / "short"
    shutil.copytree(tiny_dense_llama_dir, short)
    config = json.loads((short / "config.json").read_text())
    (short / "config.json").write_text(json.dumps({**config, "max_position_embeddings": 12}))
    res = runner.invoke(app, ["eval", str(spiking_dir), "--task", "wikitext2", "--data-dir", str(text_file),
                              "--seq-len", "16", "--dense", str(short)])
    refused(res, 3)
    assert f"the dense reference '{short}' has 12 positions; it would be compared on 16" in " ".join(res.stderr.split())
    assert "windows" not in res.stderr  # refused before anything was scored
    res = runner.invoke(app, ["eval", str(spiking_dir), "--prompt", "the river", "--max-new-tokens", "20",
                              "--compare-dense", "--dense", str(short)])
    refused(res, 3)
    assert "has 12 positions; it would be compared on 22" in " ".join(res.stderr.split())  # BOS + 2 + 20 - 1
    res = runner.invoke(app, ["distill", "--task", "wikitext2", "--model", str(tiny_dense_llama_dir), "--teacher",
                              str(short), "--data-dir", str(text_file), "--out-dir", str(tmp_path / "kd"),
                              "-s", "data.max_length=16", "-s", "data.seq_len=16", "-s", "train.max_steps=1"])
    refused(res, 3)
    assert "positions: teacher 12, the run's sequences 16 (data.max_length)" in " ".join(res.stderr.split())


def test_metrics_are_shown_as_numbers_a_reader_can_take_in():
    from spikelm_cli.render import _metric

    assert [_metric(v) for v in (12.345678, 1234, 4.7e253, float("inf"))] == ["12.3457", "1,234", "4.7000e+253", "inf"]
