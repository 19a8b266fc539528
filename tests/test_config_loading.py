"""Recipe loading: precedence, coercion, every error path reported together, and replay."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import os
import textwrap
from pathlib import Path

import pytest

from spikelm_core.config import (
    DataArgs,
    DistillArgs,
    DistillConfig,
    EvalConfig,
    FinetuneConfig,
    MlmArgs,
    NeuronArgs,
    PretrainConfig,
    TrainArgs,
    config_from_dict,
    config_to_dict,
    diff_configs,
    load_config,
    parse_overrides,
    save_config,
)
from spikelm_core.config import schema
from spikelm_core.errors import ConfigError


def write(tmp_path: Path, text: str, name: str = "recipe.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(excinfo: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return excinfo.value.details


MINIMAL = ["model=tiny-model", "glue_task=sst2"]


# ------------------------------------------------------------------------- defaults & schema


def test_finetune_defaults_follow_released_code():
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    assert cfg.task == "finetune" and cfg.glue_task == "sst2"
    assert cfg.train.lr == 2e-5 and cfg.train.lr_schedule == "constant"
    assert cfg.train.batch_size == 32 and cfg.train.weight_decay == 0.0 and cfg.train.seed == 42
    assert cfg.train.eval_strategy == "epoch" and cfg.train.keep_best is True
    assert cfg.train.report_to == ("none",)
    assert cfg.neuron == NeuronArgs() and cfg.neuron.num_timesteps == 4 and cfg.neuron.k == 2.0
    assert cfg.data.max_length == 128


def test_pretrain_section_defaults_survive_partial_recipe(tmp_path):
    recipe = write(tmp_path, """
        task: pretrain
        data: {source: text.txt}
        train: {lr: 1.0e-4}
    """)
    cfg = load_config(PretrainConfig, recipe, [])
    assert cfg.train.lr == 1e-4  # from the recipe
    # the rest are the pretraining defaults (method doc 7.1), not TrainArgs' fine-tuning ones
    assert cfg.train.lr_schedule == "linear" and cfg.train.warmup_steps == 5000
    assert cfg.train.schedule_steps == 500_000 and cfg.train.max_steps == 100_000
    assert cfg.train.eval_strategy == "no" and cfg.train.keep_best is False
    assert cfg.model is None and cfg.model_config == {} and cfg.distill is None
    assert cfg.mlm == MlmArgs(mlm_probability=0.15, nsp=False)


def test_every_schema_field_has_a_docstring():
    classes = [NeuronArgs, DataArgs, TrainArgs, DistillArgs, MlmArgs,
               FinetuneConfig, DistillConfig, PretrainConfig, EvalConfig]
    tree = ast.parse(inspect.getsource(schema))
    documented: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names = set()
            for prev, nxt in zip(node.body, node.body[1:]):
                if (isinstance(prev, ast.AnnAssign) and isinstance(nxt, ast.Expr)
                        and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                    names.add(prev.target.id)
            documented[node.name] = names
    for cls in classes:
        missing = {f.name for f in dataclasses.fields(cls)} - documented[cls.__name__]
        assert not missing, f"{cls.__name__} fields without docstring: {missing}"


def test_configs_are_frozen():
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.train.lr = 1.0  # type: ignore[misc]


# ------------------------------------------------------------------------------ precedence


def test_precedence_defaults_recipe_set_flags(tmp_path):
    recipe = write(tmp_path, """
        task: finetune
        model: from-recipe
        data: {source: glue/rte}
        out_dir: recipe-out
        train: {lr: 1.0e-5, seed: 7, batch_size: 16}
        neuron: {k: 3}
    """)
    cfg = load_config(
        FinetuneConfig,
        recipe,
        ["train.lr=3e-5", "train.seed=1", "train.seed=2", "out_dir=set-out"],
        out_dir="flag-out",
        **{"train.batch_size": None},  # a flag that was not given
    )
    assert cfg.model == "from-recipe"  # recipe only
    assert cfg.train.lr == 3e-5  # -s beats recipe
    assert cfg.train.seed == 2  # later -s beats earlier -s
    assert cfg.out_dir == "flag-out"  # flag beats -s
    assert cfg.train.batch_size == 16  # None flag ignored
    assert cfg.neuron.k == 3.0 and cfg.neuron.decay == 0.25  # defaults kept beside recipe values
    assert cfg.glue_task == "rte"


def test_set_mapping_merges_into_recipe_section(tmp_path):
    recipe = write(tmp_path, "model: m\nglue_task: rte\nneuron: {k: 3, decay: 0.5}\n")
    cfg = load_config(FinetuneConfig, recipe, ["neuron={k: 4, reset: soft}"])
    assert (cfg.neuron.k, cfg.neuron.decay, cfg.neuron.reset) == (4.0, 0.5, "soft")


def test_dotted_flag_keys(tmp_path):
    cfg = load_config(FinetuneConfig, None, MINIMAL, **{"train.seed": 5, "neuron.num_timesteps": 1})
    assert cfg.train.seed == 5 and cfg.neuron.num_timesteps == 1


def test_parse_overrides_values_are_yaml():
    assert parse_overrides(["a.b=3", "c=2e-5", "d=[x, y]", "e=null", "f=", "g=a=b", " h = true"]) == [
        ("a.b", 3), ("c", "2e-5"), ("d", ["x", "y"]), ("e", None), ("f", None), ("g", "a=b"), ("h", True),
    ]


# -------------------------------------------------------------------------------- coercion


def test_float_written_like_2e_minus_5_is_accepted(tmp_path):
    # PyYAML reads 2e-5 (no dot) as a *string*; float fields must still take it
    recipe = write(tmp_path, "model: m\nglue_task: sst2\ntrain:\n  lr: 2e-5\n  weight_decay: 1E-2\n")
    cfg = load_config(FinetuneConfig, recipe, [])
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.01
    assert load_config(FinetuneConfig, None, [*MINIMAL, "train.lr=5e-5"]).train.lr == 5e-5


def test_int_for_float_and_integral_float_for_int():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.epochs=3", "train.save_steps=5e4", "neuron.k=2"])
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.save_steps == 50_000 and isinstance(cfg.train.save_steps, int)
    assert isinstance(cfg.neuron.k, float)
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "train.save_steps=2.5"])
    assert problems(exc) == ["train.save_steps: expected int, got 2.5"]


def test_yaml_no_is_a_literal_choice(tmp_path):
    recipe = write(tmp_path, "model: m\nglue_task: sst2\ntrain: {eval_strategy: no, keep_best: false}\n")
    cfg = load_config(FinetuneConfig, recipe, [])
    assert cfg.train.eval_strategy == "no"


def test_yaml_boolean_for_a_literal_without_that_spelling(tmp_path):
    recipe = write(tmp_path, "model: m\nglue_task: sst2\nneuron: {reset: off}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [])
    assert problems(exc) == [
        "neuron.reset: expected one of 'official', 'soft', 'none', got False "
        "(YAML reads yes/no/on/off/true/false as booleans; quote the value)"
    ]


def test_single_string_for_list_field():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=tensorboard"])
    assert cfg.train.report_to == ("tensorboard",)
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=[tensorboard, wandb]"])
    assert cfg.train.report_to == ("tensorboard", "wandb")


def test_optional_section_from_null_to_mapping(tmp_path):
    recipe = write(tmp_path, "task: pretrain\ndata: {source: t.txt}\ndistill: null\n")
    assert load_config(PretrainConfig, recipe, []).distill is None
    cfg = load_config(PretrainConfig, recipe, ["distill.teacher=teacher-dir", "distill.alpha_hidden=0.5"])
    assert cfg.distill == DistillArgs(teacher="teacher-dir", alpha_hidden=0.5)


def test_model_config_is_a_free_mapping():
    overrides = ["data.source=t.txt", "model_config={hidden_size: 24, num_hidden_layers: 2}"]
    cfg = load_config(PretrainConfig, None, overrides)
    assert cfg.model_config == {"hidden_size": 24, "num_hidden_layers": 2}


# ------------------------------------------------------------------------------- glue task


@pytest.mark.parametrize(
    "overrides, expected",
    [
        pytest.param(["data.source=glue/sst2"], "sst2", id="glue-id"),
        pytest.param(["data.source=../shared/data/glue/STS-B"], "stsb", id="task-dir"),
        pytest.param(["data.source=/data/glue/", "glue_task=SST-2"], "sst2", id="root-plus-task"),
        pytest.param(["glue_task=MNLI"], "mnli", id="task-only"),
        pytest.param(["glue_task=rte", "data.source=glue/RTE"], "rte", id="both-agree"),
    ],
)
def test_glue_task_inferred_and_normalised(overrides, expected):
    assert load_config(FinetuneConfig, None, ["model=m", *overrides]).glue_task == expected


@pytest.mark.parametrize(
    "overrides, line",
    [
        pytest.param([], "glue_task: is required: set glue_task, or data.source to 'glue/<task>' "
                         "or a GLUE task directory", id="neither"),
        pytest.param(["glue_task=sst3"], "glue_task: unknown GLUE task 'sst3'; choose from "
                                          "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte", id="unknown"),
        pytest.param(["glue_task=sst2", "data.source=glue/rte"],
                     "glue_task: 'sst2' disagrees with data.source 'glue/rte' (task 'rte')", id="disagree"),
        pytest.param(["data.source=glue/wnli"], "data.source: unknown GLUE task in 'glue/wnli'; choose from "
                                                 "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte", id="bad-id"),
    ],
)
def test_glue_task_problems(overrides, line):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, ["model=m", *overrides])
    assert problems(exc) == [line]


def test_eval_splits_accept_hub_names_and_reject_unknown():
    cfg = load_config(EvalConfig, None, ["model=m", "glue_task=mnli", "splits=[validation_matched, dev_mismatched]"])
    assert cfg.splits == ("dev_matched", "dev_mismatched")
    with pytest.raises(ConfigError) as exc:
        load_config(EvalConfig, None, ["model=m", "glue_task=sst2", "splits=[test]"])
    assert problems(exc) == ["splits: sst2 has no split 'test'; choose from train, dev"]


# ------------------------------------------------------------------------- error reporting


def test_unknown_key_did_you_mean():
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "train.lr_warmup=100"])
    assert problems(exc) == ["train.lr_warmup: unknown key (did you mean 'train.warmup_steps'?)"]
    assert exc.value.exit_code == 2


@pytest.mark.parametrize(
    "key, suggestion",
    [
        pytest.param("train.max_length", "data.max_length", id="other-section"),
        pytest.param("train.learning_rate", "train.lr", id="hf-alias"),
        pytest.param("nueron.k", "neuron", id="section-typo"),
        pytest.param("neuron.timesteps", "neuron.num_timesteps", id="alias"),
        pytest.param("train.sead", "train.seed", id="typo"),
    ],
)
def test_unknown_key_suggestions(key, suggestion):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, f"{key}=1"])
    leaf = key.split(".")[0] if suggestion == "neuron" else key
    assert problems(exc) == [f"{leaf}: unknown key (did you mean {suggestion!r}?)"]


def test_unknown_key_without_close_match_has_no_hint():
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "train.zzzzqqq=1"])
    assert problems(exc) == ["train.zzzzqqq: unknown key"]


@pytest.mark.parametrize(
    "override, line",
    [
        pytest.param("train.lr=abc", "train.lr: expected float, got 'abc'", id="float"),
        pytest.param("train.batch_size=many", "train.batch_size: expected int, got 'many'", id="int"),
        pytest.param("train.bf16=maybe", "train.bf16: expected bool, got 'maybe'", id="bool"),
        pytest.param("train.bf16=1", "train.bf16: expected bool, got 1", id="int-for-bool"),
        pytest.param("train.seed=true", "train.seed: expected int, got True", id="bool-for-int"),
        pytest.param("model=123", "model: expected str, got 123", id="str"),
        pytest.param("train.grad_clip=[1]", "train.grad_clip: expected float or null, got [1]", id="optional"),
        pytest.param("train=5", "train: expected a mapping of TrainArgs keys, got 5", id="section"),
        pytest.param("train.report_to=[1]", "train.report_to[0]: expected str, got 1", id="list-item"),
        pytest.param("data.max_length=null", "data.max_length: expected int, got null", id="null"),
    ],
)
def test_wrong_types(override, line):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, override])
    assert problems(exc) == [line]


def test_literal_out_of_choices_lists_them():
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "neuron.reset=sft", "train.lr_schedule=cosine"])
    assert problems(exc) == [
        "neuron.reset: expected one of 'official', 'soft', 'none', got 'sft' (did you mean 'soft'?)",
        "train.lr_schedule: expected one of 'constant', 'linear', got 'cosine'",
    ]


def test_post_init_problems_all_reported():
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "neuron.k=0", "neuron.num_timesteps=0", "neuron.decay=1.5",
                                           "train.bf16=true", "train.fp16=true"])
    assert problems(exc) == [
        "neuron.num_timesteps: must be >= 1, got 0",
        "neuron.k: must be > 0, got 0.0",
        "neuron.decay: must be in [0, 1], got 1.5",
        "train.fp16: bf16 and fp16 cannot both be true",
    ]


def test_learn_alpha_needs_elastic_calibrated_amplitudes():
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "neuron.learn_alpha=true", "neuron.amplitude=unit"])
    assert problems(exc) == ["neuron.learn_alpha: needs kind 'elastic_bi', amplitude 'elastic' and alpha_mode 'calibrated'"]
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "neuron.learn_alpha=true", "train.compile=layers",
                                             "train.sampling=group_by_length"])
    assert cfg.neuron.learn_alpha and cfg.train.compile == "layers" and cfg.train.sampling == "group_by_length"


def test_direct_construction_validates_too():
    with pytest.raises(ValueError, match="k: must be > 0"):
        NeuronArgs(k=-1.0)


def test_every_problem_in_one_error(tmp_path):
    recipe = write(tmp_path, """
        task: finetune
        glue_task: sst2
        train: {lr_warmup: 5, lr: abc}
        neuron: {k: -1, reset: sft}
    """)
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, ["foo", "data.max_length=x"])
    assert problems(exc) == [
        "'foo': expected key=value",
        "model: required, no default",
        "neuron.reset: expected one of 'official', 'soft', 'none', got 'sft' (did you mean 'soft'?)",
        "neuron.k: must be > 0, got -1.0",
        "data.max_length: expected int, got 'x'",
        "train.lr_warmup: unknown key (did you mean 'train.warmup_steps'?)",
        "train.lr: expected float, got 'abc'",
    ]
    assert exc.value.message == f"invalid recipe {str(recipe)!r}: 7 problems"
    assert "--print-config" in exc.value.hint


def test_cross_field_check_not_blamed_on_a_bad_value():
    # lr_schedule is invalid, so "schedule_steps only with linear" would only echo the stand-in
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, "train.lr_schedule=cosine", "train.schedule_steps=10"])
    assert problems(exc) == ["train.lr_schedule: expected one of 'constant', 'linear', got 'cosine'"]


@pytest.mark.parametrize(
    "override, line",
    [
        pytest.param("foo", "'foo': expected key=value", id="no-equals"),
        pytest.param("=3", "'=3': bad key '' (use a dotted path such as train.lr)", id="empty-key"),
        pytest.param("train..lr=3", "'train..lr=3': bad key 'train..lr' (use a dotted path such as train.lr)",
                     id="double-dot"),
        pytest.param("train.lr=[1", "'train.lr=[1': value is not valid YAML (expected ',' or ']', "
                                    "but got '<stream end>')", id="bad-yaml"),
    ],
)
def test_bad_set_syntax(override, line):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, None, [*MINIMAL, override])
    assert problems(exc) == [line]


def test_parse_overrides_raises_when_collecting_nowhere():
    with pytest.raises(ConfigError) as exc:
        parse_overrides(["ok=1", "foo"])
    assert problems(exc) == ["'foo': expected key=value"]


def test_malformed_yaml_reports_line_and_column(tmp_path):
    recipe = write(tmp_path, "model: m\ntrain:\n  lr: 1: 2\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, ["also bad"])
    assert problems(exc) == [
        f"{recipe}: invalid YAML at line 3, column 8: mapping values are not allowed here",
        "'also bad': expected key=value",
    ]
    assert exc.value.message.startswith("cannot load recipe")


def test_unclosed_flow_mapping(tmp_path):
    recipe = write(tmp_path, "model: m\ntrain: {lr: 1\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [])
    assert problems(exc) == [
        f"{recipe}: invalid YAML at line 3, column 1: expected ',' or '}}', but got '<stream end>'"
    ]


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, tmp_path / "nope.yaml", [])
    assert problems(exc) == [f"{tmp_path / 'nope.yaml'}: recipe file not found"]
    assert exc.value.exit_code == 2


def test_recipe_is_a_directory(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, tmp_path, [])
    assert problems(exc) == [f"{tmp_path}: is a directory, not a recipe file"]


def test_recipe_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, write(tmp_path, "- a\n- b\n"), [])
    assert problems(exc) == [f"{tmp_path / 'recipe.yaml'}: a recipe must be a mapping of keys, got list"]


def test_empty_recipe_gives_defaults(tmp_path):
    cfg = load_config(FinetuneConfig, write(tmp_path, "# nothing yet\n"), MINIMAL)
    assert cfg == load_config(FinetuneConfig, None, MINIMAL)


def test_duplicate_keys_are_reported(tmp_path):
    recipe = write(tmp_path, "model: m\nglue_task: sst2\ntrain:\n  lr: 1.0e-5\n  lr: 2.0e-5\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, [])
    assert problems(exc) == [f"{recipe}: duplicate key 'lr' at line 5"]


def test_recipe_for_another_command(tmp_path):
    recipe = write(tmp_path, "task: pretrain\ndata: {source: t.txt}\n")
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, recipe, MINIMAL)
    assert problems(exc) == [f"task: recipe {str(recipe)!r} is for 'pretrain', not 'finetune'"]
    assert "spikelm pretrain" in exc.value.hint


def test_unknown_task_value(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_config(FinetuneConfig, write(tmp_path, "task: finetun\n"), MINIMAL)
    assert problems(exc) == ["task: expected 'finetune', got 'finetun'"]


def test_required_teacher_for_distill():
    with pytest.raises(ConfigError) as exc:
        load_config(DistillConfig, None, ["model=m", "data.source=glue/rte"])
    assert problems(exc) == ["distill.teacher: is required"]
    cfg = load_config(DistillConfig, None, ["model=m", "data.source=glue/rte", "distill.teacher=t"])
    assert cfg.glue_task == "rte" and cfg.distill.teacher == "t"


def test_distill_on_text_needs_a_source():
    cfg = load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.source=corpus.txt"])
    assert cfg.glue_task is None
    with pytest.raises(ConfigError) as exc:
        load_config(DistillConfig, None, ["model=m", "distill.teacher=t"])
    assert problems(exc) == [
        "data.source: is required: 'glue/<task>', a GLUE task directory, or a text file/directory for MLM"
    ]


def test_config_from_dict_is_as_strict():
    with pytest.raises(ConfigError) as exc:
        config_from_dict(FinetuneConfig, {"model": "m", "glue_task": "sst2", "train": {"lrr": 1}})
    assert problems(exc) == ["train.lrr: unknown key (did you mean 'train.lr'?)"]
    assert config_from_dict(FinetuneConfig, {"task": "finetune", "model": "m", "glue_task": "sst2"}).model == "m"


# ------------------------------------------------------------------------------- replay


ROUND_TRIP = [
    pytest.param(FinetuneConfig, ["model=m", "data.source=../shared/data/glue/SST-2", "train.lr=3.3e-5",
                                  "train.report_to=[tensorboard]", "train.grad_clip=1.0", "neuron.reset=none",
                                  "train.eval_strategy=no", "train.keep_best=false", "out_dir=runs/x"],
                 id="finetune"),
    pytest.param(DistillConfig, ["model=m", "distill.teacher=t", "data.source=glue/mnli", "distill.temperature=2",
                                 "train.eval_strategy=steps", "train.eval_steps=7"], id="distill"),
    pytest.param(PretrainConfig, ["data.source=wiki.txt", "model_config={hidden_size: 24, num_attention_heads: 3}",
                                  "distill.teacher=t", "mlm.nsp=true", "neuron.kind=lif"], id="pretrain"),
    pytest.param(EvalConfig, ["model=m", "glue_task=mnli", "splits=[dev_mismatched]", "neuron.k=3"], id="eval"),
]


@pytest.mark.parametrize("cls, overrides", ROUND_TRIP)
def test_save_and_replay_gives_an_equal_config(tmp_path, cls, overrides):
    cfg = load_config(cls, None, overrides)
    path = save_config(cfg, tmp_path / "run" / "run_config.yaml", header="spikelm run config\nreplay it")
    text = path.read_text()
    assert text.startswith("# spikelm run config\n# replay it\ntask: ")
    assert load_config(cls, path, []) == cfg
    assert sorted(os.listdir(path.parent)) == ["run_config.yaml"]  # no temporary files left


def test_config_to_dict_is_plain_and_ordered():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=wandb"])
    data = config_to_dict(cfg)
    assert list(data) == ["task", "model", "glue_task", "summarization_task", "generate", "out_dir", "neuron", "data", "train"]
    assert data["train"]["report_to"] == ["wandb"] and isinstance(data["neuron"], dict)
    with pytest.raises(TypeError):
        config_to_dict({"not": "a config"})


def test_save_config_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "run_config.yaml"
    target.write_text("old\n")
    cfg = load_config(FinetuneConfig, None, MINIMAL)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        save_config(cfg, target)
    assert target.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["run_config.yaml"]


def test_diff_configs_lists_changed_leaves():
    a = load_config(FinetuneConfig, None, MINIMAL)
    b = load_config(FinetuneConfig, None, [*MINIMAL, "train.lr=1e-4", "neuron.k=3"])
    assert diff_configs(a, b) == [("neuron.k", 2.0, 3.0), ("train.lr", 2e-5, 1e-4)]
    assert diff_configs(a, a) == []
