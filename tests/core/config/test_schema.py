"""The recipe schema: defaults, descriptions, frozen models, types and coercion, the benchmark task,
and the rules over several fields (all reported together, each with its dotted path)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from spikelm_core.config import (
    TASK_CONFIGS,
    TASK_NAMES,
    DataArgs,
    DistillArgs,
    DistillConfig,
    EvalConfig,
    FinetuneConfig,
    GenerateArgs,
    MlmArgs,
    NeuronArgs,
    NeuronSettings,
    PretrainConfig,
    PromptArgs,
    TrainArgs,
    infer_task,
    load_config,
    normalize_task,
    task_family,
)
from spikelm_core.config import schema
from spikelm_core.errors import ConfigError

MINIMAL = ["model=tiny-model", "data.task=sst2"]


def problems(overrides: list[str], cls: type = FinetuneConfig) -> list[str]:
    with pytest.raises(ConfigError) as exc:
        load_config(cls, None, overrides)
    assert exc.value.exit_code == 2
    return exc.value.details


# ------------------------------------------------------------------------- defaults & schema


def test_finetune_defaults_follow_released_code():
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    assert cfg.command == "finetune" and cfg.task == "sst2" and cfg.task_family == "glue"
    assert cfg.train.lr == 2e-5 and cfg.train.lr_schedule == "constant"
    assert cfg.train.batch_size == 32 and cfg.train.weight_decay == 0.0 and cfg.train.seed == 42
    assert cfg.train.eval_strategy == "epoch" and cfg.train.keep_best is True
    assert cfg.train.report_to == ("none",)
    assert cfg.neuron == NeuronArgs() and cfg.neuron.num_timesteps == 4 and cfg.neuron.k == 2.0
    assert cfg.data.max_length == 128


def test_pretrain_defaults():
    cfg = load_config(PretrainConfig, None, ["data.source=text.txt"])
    t = cfg.train
    assert (t.lr, t.lr_schedule, t.warmup_steps, t.schedule_steps, t.max_steps) == (2e-4, "linear", 5000, 500_000, 100_000)
    assert t.eval_strategy == "no" and t.keep_best is False and t.batch_size == 64 and t.save_steps == 50_000
    assert cfg.model is None and cfg.model_overrides == {} and cfg.distill is None
    assert cfg.mlm == MlmArgs(mlm_probability=0.15, nsp=False)
    assert cfg.task is None and cfg.task_family == "mlm"
    constant = load_config(PretrainConfig, None, ["data.source=text.txt", "train.lr_schedule=constant"]).train
    assert constant.schedule_steps is None  # the default 500k horizon belongs to the linear schedule alone


def test_neuron_section_is_neuron_settings():
    assert NeuronArgs is NeuronSettings
    for cls in (FinetuneConfig, DistillConfig, PretrainConfig):
        assert cls.model_fields["neuron"].annotation is NeuronSettings
    assert EvalConfig.model_fields["neuron"].default is None


def _models() -> list[type[BaseModel]]:
    return [DataArgs, TrainArgs, DistillArgs, GenerateArgs, PromptArgs, MlmArgs, *TASK_CONFIGS.values()]


@pytest.mark.parametrize("cls", _models(), ids=lambda c: c.__name__)
def test_every_field_has_a_description(cls):
    missing = [name for name, f in cls.model_fields.items() if not (f.description or "").strip()]
    assert not missing, f"{cls.__name__} fields without docstring: {missing}"


@pytest.mark.parametrize("cls", _models(), ids=lambda c: c.__name__)
def test_models_are_frozen_strict_and_closed(cls):
    assert cls.model_config["frozen"] and cls.model_config["extra"] == "forbid" and cls.model_config["strict"]


def test_shared_fields_are_declared_once():
    # command, model, out_dir, neuron and data come from one base; every task config has them first
    for cls in TASK_CONFIGS.values():
        assert list(cls.model_fields)[:5] == ["command", "model", "out_dir", "neuron", "data"]
        assert issubclass(cls, schema._TaskConfig)
    assert {name: cls.model_fields["command"].default for name, cls in TASK_CONFIGS.items()} == {
        name: name for name in TASK_CONFIGS
    }


def test_configs_are_frozen():
    cfg = load_config(FinetuneConfig, None, MINIMAL)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_direct_construction_validates_too():
    with pytest.raises(ValidationError, match="greater than 0"):
        NeuronArgs(k=-1.0)
    with pytest.raises(ValidationError, match="eval_steps: is required when eval_strategy is 'steps'"):
        TrainArgs(eval_strategy="steps")
    cfg = FinetuneConfig(model="m", data=DataArgs(source="glue/RTE"))
    assert cfg.task == "rte" and cfg.command == "finetune"


# -------------------------------------------------------------------------------- coercion


def test_float_written_like_2e_minus_5_is_a_float():
    # PyYAML reads 2e-5 (no dot) as a *string*; float fields must still take it
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.lr=2e-5", "train.weight_decay=1E-2", "neuron.k=3e0"])
    assert cfg.train.lr == 2e-5 and isinstance(cfg.train.lr, float)
    assert cfg.train.weight_decay == 0.01 and cfg.neuron.k == 3.0
    assert TrainArgs.model_validate({"lr": "2e-5"}).lr == 2e-5


def test_int_for_float_and_integral_float_for_int():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.epochs=3", "train.save_steps=5e4", "neuron.k=2"])
    assert cfg.train.epochs == 3.0 and isinstance(cfg.train.epochs, float)
    assert cfg.train.save_steps == 50_000 and isinstance(cfg.train.save_steps, int)
    assert isinstance(cfg.neuron.k, float)
    assert problems([*MINIMAL, "train.save_steps=2.5"]) == ["train.save_steps: expected int, got 2.5"]


def test_yaml_no_is_a_literal_choice():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.eval_strategy=no", "train.keep_best=off"])
    assert cfg.train.eval_strategy == "no" and cfg.train.keep_best is False


def test_yaml_boolean_for_a_literal_without_that_spelling():
    assert problems([*MINIMAL, "neuron.reset=off"]) == [
        "neuron.reset: expected one of 'official', 'soft', 'none', got False "
        "(YAML reads yes/no/on/off/true/false as booleans; quote the value)"
    ]


def test_single_string_for_list_field():
    assert load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=tensorboard"]).train.report_to == ("tensorboard",)
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.report_to=[tensorboard, wandb]"])
    assert cfg.train.report_to == ("tensorboard", "wandb")


def test_non_finite_floats_are_refused():
    assert problems([*MINIMAL, "train.lr=.inf", "train.weight_decay=.nan", "neuron.k=.inf"]) == [
        "neuron.k: must be a finite number, got inf",
        "train.lr: must be a finite number, got inf",
        "train.weight_decay: must be a finite number, got nan",
    ]


def test_optional_section_from_null_to_mapping():
    assert load_config(PretrainConfig, None, ["data.source=t.txt", "distill=null"]).distill is None
    cfg = load_config(PretrainConfig, None, ["data.source=t.txt", "distill.teacher=teacher-dir", "distill.alpha_hidden=0.5"])
    assert cfg.distill == DistillArgs(teacher="teacher-dir", alpha_hidden=0.5)


def test_model_config_is_a_free_mapping():
    cfg = load_config(PretrainConfig, None, ["data.source=t.txt", "model_config={hidden_size: 24, num_hidden_layers: 2}"])
    assert cfg.model_overrides == {"hidden_size": 24, "num_hidden_layers": 2}
    assert problems(["data.source=t.txt", "model_overrides={a: 1}"], PretrainConfig) == [
        "model_overrides: unknown key (did you mean 'model_config'?)"
    ]


@pytest.mark.parametrize("cls", [FinetuneConfig, DistillConfig])
def test_training_commands_take_model_config_and_eval_does_not(cls):
    extra = ["distill.teacher=t"] if cls is DistillConfig else []
    cfg = load_config(cls, None, ["model=m", "data.task=sst2", "model_config={hidden_dropout_prob: 0.0}", *extra])
    assert cfg.model_overrides == {"hidden_dropout_prob": 0.0}
    [problem] = problems(["model=m", "data.task=sst2", "model_config={hidden_dropout_prob: 0.0}"], EvalConfig)
    assert problem.startswith("model_config: unknown key")


def test_pretrain_section_defaults_survive_a_partial_train_section():
    cfg = load_config(PretrainConfig, None, ["data.source=t.txt", "train={lr: 1.0e-4}"])
    assert cfg.train.lr == 1e-4 and cfg.train.schedule_steps == 500_000 and cfg.train.keep_best is False


# ------------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    "override, line",
    [
        pytest.param("train.lr=abc", "train.lr: expected float, got 'abc'", id="float"),
        pytest.param("train.batch_size=many", "train.batch_size: expected int, got 'many'", id="int"),
        pytest.param("train.keep_best=maybe", "train.keep_best: expected bool, got 'maybe'", id="bool"),
        pytest.param("train.bf16=maybe", "train.bf16: expected bool or 'auto', got 'maybe'", id="union"),
        pytest.param("train.bf16=1", "train.bf16: expected bool or 'auto', got 1", id="int-for-bool"),
        pytest.param("neuron.spike_kv=1", "neuron.spike_kv: expected bool, got 1", id="int-for-neuron-bool"),
        pytest.param("train.seed=true", "train.seed: expected int, got True", id="bool-for-int"),
        pytest.param("neuron.k=true", "neuron.k: expected float, got True", id="bool-for-float"),
        pytest.param("model=123", "model: expected str, got 123", id="str"),
        pytest.param("train.grad_clip=[1]", "train.grad_clip: expected float or null, got [1]", id="optional"),
        pytest.param("train=5", "train: expected a mapping of TrainArgs keys, got 5", id="section"),
        pytest.param("train.report_to=[1]", "train.report_to[0]: expected one of 'none', 'tensorboard', 'wandb', got 1",
                     id="list-item"),
        pytest.param("data.max_length=null", "data.max_length: expected int, got null", id="null"),
    ],
)
def test_wrong_types(override, line):
    assert problems([*MINIMAL, override]) == [line]


def test_literal_out_of_choices_lists_them():
    assert problems([*MINIMAL, "neuron.reset=sft", "train.lr_schedule=cosine"]) == [
        "neuron.reset: expected one of 'official', 'soft', 'none', got 'sft' (did you mean 'soft'?)",
        "train.lr_schedule: expected one of 'constant', 'linear', got 'cosine'",
    ]


# ------------------------------------------------------------------------------ rules


def test_bounds_and_rules_all_reported():
    assert problems([*MINIMAL, "neuron.k=0", "neuron.num_timesteps=0", "neuron.decay=1.5",
                     "train.bf16=true", "train.fp16=true", "train.eval_strategy=steps", "train.max_steps=0"]) == [
        "neuron.num_timesteps: must be >= 1, got 0",
        "neuron.k: must be > 0, got 0.0",
        "neuron.decay: must be <= 1, got 1.5",
        "train.max_steps: must be -1 (use epochs) or >= 1, got 0",
        "train.eval_steps: is required when eval_strategy is 'steps'",
        "train.fp16: cannot be true while bf16 is true or auto: choose one precision",
    ]


@pytest.mark.parametrize(
    "overrides, line",
    [
        pytest.param(["train.eval_strategy=no"], "train.keep_best: needs evaluation: set eval_strategy to 'epoch' or "
                     "'steps', or keep_best to false", id="keep-best"),
        pytest.param(["train.schedule_steps=10"], "train.schedule_steps: is only used with lr_schedule 'linear'",
                     id="schedule-steps"),
        pytest.param(["train.report_to=[none, wandb]"], "train.report_to: 'none' cannot be combined with other sinks",
                     id="report-to"),
        pytest.param(["model=' '"], "model: must not be empty", id="blank-model"),
        pytest.param(["data.source=' '"], "data.source: must not be empty", id="blank-source"),
        pytest.param(["data.train_subset=0"], "data.train_subset: must be >= 1, got 0", id="subset"),
        pytest.param(["train.mismatched_model=kept"],
                     "train.mismatched_model: is for MNLI, whose mismatched dev set it scores; sst2 has none: drop it",
                     id="mismatched-not-mnli"),
        pytest.param(["generate.max_new_tokens=8", "generate.min_new_tokens=9"],
                     "generate.min_new_tokens: (9) must be at most max_new_tokens (8)", id="min-new-tokens"),
    ],
)
def test_single_rules(overrides, line):
    assert problems([*MINIMAL, *overrides]) == [line]


def test_a_rule_is_not_blamed_on_a_bad_value():
    # lr_schedule is invalid, so "schedule_steps only with linear" would only describe a stand-in
    assert problems([*MINIMAL, "train.lr_schedule=cosine", "train.schedule_steps=10"]) == [
        "train.lr_schedule: expected one of 'constant', 'linear', got 'cosine'"
    ]


def test_learn_alpha_rule_comes_from_neuron_settings():
    assert problems([*MINIMAL, "neuron.learn_alpha=true", "neuron.amplitude=unit"]) == [
        "neuron: learn_alpha needs kind 'elastic_bi' and amplitude 'elastic'"
    ]
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "neuron.learn_alpha=true", "train.compile=layers",
                                             "train.sampling=group_by_length"])
    assert cfg.neuron.learn_alpha and cfg.train.compile == "layers" and cfg.train.sampling == "group_by_length"


def test_distill_needs_a_teacher_and_a_spiking_student():
    assert problems(["model=m", "data.source=glue/rte"], DistillConfig) == ["distill.teacher: is required"]
    assert problems(["model=m", "data.source=glue/rte", "distill.teacher=t", "neuron.kind=dense"], DistillConfig) == [
        "neuron.kind: 'dense' has no spiking student; choose elastic_bi or lif"
    ]
    # the task config's own rules wait until its sections are valid (here: distill)
    assert problems(["model=m", "distill.teacher=t", "distill.alpha_kd=0"], DistillConfig) == [
        "distill.alpha_kd: at least one of alpha_kd, alpha_ce, alpha_hidden, alpha_attn must be > 0",
    ]
    cfg = load_config(DistillConfig, None, ["model=m", "data.source=glue/rte", "distill.teacher=t"])
    assert cfg.task == "rte" and cfg.distill.teacher == "t"


def test_distill_on_text_needs_a_source():
    cfg = load_config(DistillConfig, None, ["model=m", "distill.teacher=t", "data.source=corpus.txt"])
    assert cfg.task is None and cfg.task_family == "mlm"
    assert problems(["model=m", "distill.teacher=t"], DistillConfig) == [
        "data.source: is required: 'glue/<task>', a GLUE task directory, or a text file/directory for MLM"
    ]


def test_pretrain_rules():
    assert problems(["neuron.kind=dense", "distill={alpha_kd: 1}", "data.task=sst2", "model=''"], PretrainConfig) == [
        "model: must not be empty (null = from scratch)",
        "data.source: is required (a text file or directory)",
        "data.task: must be null: pretraining reads plain text",
        "neuron.kind: 'dense' is not a spiking model; choose elastic_bi or lif",
        "distill.teacher: is required when distill is set",
    ]


def test_dense_finetune_is_allowed():
    assert load_config(FinetuneConfig, None, [*MINIMAL, "neuron.kind=dense"]).neuron.spiking is False


def test_firing_rate_target():
    cfg = load_config(FinetuneConfig, None, [*MINIMAL, "train.target_firing_rate=0.2"])
    assert (cfg.train.target_firing_rate, cfg.train.firing_rate_weight, cfg.train.firing_rate_penalty) == (
        0.2, 1.0, "hinge")
    assert load_config(FinetuneConfig, None, MINIMAL).train.target_firing_rate is None
    assert problems([*MINIMAL, "train.target_firing_rate=1", "train.firing_rate_weight=-1",
                     "train.firing_rate_penalty=hing"]) == [
        "train.target_firing_rate: must be < 1, got 1.0",
        "train.firing_rate_weight: must be >= 0, got -1.0",
        "train.firing_rate_penalty: expected one of 'hinge', 'squared', got 'hing' (did you mean 'hinge'?)",
    ]
    assert problems([*MINIMAL, "train.target_firing_rate=0"]) == ["train.target_firing_rate: must be > 0, got 0.0"]
    assert problems([*MINIMAL, "train.target_firing_rate=0.2", "neuron.kind=dense"]) == [
        "train.target_firing_rate: needs a spiking model, but neuron.kind is 'dense': choose elastic_bi or lif, "
        "or drop the target"
    ]
    # the penalty's shape without a target would be ignored in silence (a sweep over it: identical runs)
    assert problems([*MINIMAL, "train.firing_rate_weight=100", "train.firing_rate_penalty=squared"]) == [
        "train.firing_rate_weight: shapes the firing-rate penalty, which only train.target_firing_rate turns on: "
        "set a target, or drop firing_rate_weight (a sweep over targets: give firing_rate_weight in the grid or in each point beside "
        "the target)",
        "train.firing_rate_penalty: shapes the firing-rate penalty, which only train.target_firing_rate turns on: "
        "set a target, or drop firing_rate_penalty (a sweep over targets: give firing_rate_penalty in the grid or in each point beside "
        "the target)",
    ]
    # float salient channels are no spikes: the penalty would count them
    assert problems([*MINIMAL, "train.target_firing_rate=0.2", "neuron.salient_fraction=0.01",
                     "neuron.salient_mode=float"]) == [
        "train.target_firing_rate: cannot run with float salient channels (neuron.salient_mode 'float'): the "
        "penalty would count their float inputs as spikes; use salient_mode 'steps', or drop one of the two"
    ]
    assert load_config(FinetuneConfig, None, [*MINIMAL, "train.target_firing_rate=0.2",
                                              "neuron.salient_fraction=0.01"]).neuron.salient_mode == "steps"


# ---------------------------------------------------------------------------- benchmark task


def test_task_choices_come_from_the_registries():
    from spikelm_core.data.glue import GLUE_TASKS
    from spikelm_core.data.lm import LM_TASKS
    from spikelm_core.data.summarization import SUMMARIZATION_TASKS

    assert TASK_NAMES == (*GLUE_TASKS, *SUMMARIZATION_TASKS, *LM_TASKS)
    assert [task_family(t) for t in ("sst2", "xsum", "wikitext2", None)] == ["glue", "summarization", "lm", "mlm"]


@pytest.mark.parametrize(
    "spelling, task",
    [("SST-2", "sst2"), ("glue/STS-B", "stsb"), ("mnli-mm", "mnli"), ("XSum", "xsum"), ("cnndm", "cnn_dm"),
     ("cnn-dm", "cnn_dm"), ("cnn_dailymail", "cnn_dm"), ("WikiText-2", "wikitext2"), ("wnli", None)],
)
def test_normalize_task(spelling, task):
    assert normalize_task(spelling) == task


@pytest.mark.parametrize(
    "overrides, expected, family",
    [
        pytest.param(["data.source=glue/sst2"], "sst2", "glue", id="glue-id"),
        pytest.param(["data.source=/data/glue/STS-B"], "stsb", "glue", id="task-dir"),
        pytest.param(["data.source=/data/glue/", "data.task=SST-2"], "sst2", "glue", id="root-plus-task"),
        pytest.param(["data.task=MNLI"], "mnli", "glue", id="task-only"),
        pytest.param(["data.task=rte", "data.source=glue/RTE"], "rte", "glue", id="both-agree"),
        pytest.param(["data.source=xsum"], "xsum", "summarization", id="summarization-source"),
        pytest.param(["data.task=CNN-DM"], "cnn_dm", "summarization", id="summarization-task"),
    ],
)
def test_task_inferred_and_normalised(overrides, expected, family):
    cfg = load_config(FinetuneConfig, None, ["model=m", *overrides])
    assert (cfg.task, cfg.data.task, cfg.task_family) == (expected, expected, family)


@pytest.mark.parametrize(
    "overrides, line",
    [
        pytest.param([], "data.task: is required: set data.task, or data.source to 'glue/<task>', a GLUE task "
                         "directory or a summarisation dataset (xsum, cnn_dm)", id="neither"),
        pytest.param(["data.task=sst3"], "data.task: expected one of 'cola', 'sst2', 'mrpc', 'qqp', 'stsb', 'mnli', "
                                         "'qnli', 'rte', 'xsum', 'cnn_dm', 'wikitext2' or null, got 'sst3' "
                                         "(did you mean 'sst2'?)",
                     id="unknown"),
        pytest.param(["data.task=sst2", "data.source=glue/rte"],
                     "data.task: 'sst2' disagrees with data.source 'glue/rte' (task 'rte')", id="disagree"),
        pytest.param(["data.task=xsum", "data.source=cnn_dm"],
                     "data.task: 'xsum' disagrees with data.source 'cnn_dm' (task 'cnn_dm')", id="disagree-summ"),
        pytest.param(["data.source=glue/wnli"], "data.source: unknown GLUE task in 'glue/wnli'; choose from "
                                                "cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte", id="bad-id"),
    ],
)
def test_task_problems(overrides, line):
    assert problems(["model=m", *overrides]) == [line]


def test_infer_task():
    assert [infer_task(s) for s in (None, "glue/qnli", "../glue/CoLA", "xsum", "corpus.txt", "wikitext2",
                                    "../text/wikitext-2/test.txt")] == [
        None, "qnli", "cola", "xsum", None, "wikitext2", None,
    ]
    with pytest.raises(ValueError):
        infer_task("glue/nope")


def test_eval_splits_accept_hub_names_and_reject_unknown():
    cfg = load_config(EvalConfig, None, ["model=m", "data.task=mnli", "splits=[validation_matched, dev_mismatched]"])
    assert cfg.splits == ("dev_matched", "dev_mismatched")
    assert problems(["model=m", "data.task=sst2", "splits=[test]"], EvalConfig) == [
        "splits: sst2 has no split 'test'; choose from train, dev"
    ]
    assert problems(["model=m", "data.task=xsum", "splits=dev"], EvalConfig) == [
        "splits: xsum splits are train, validation, test; got ['dev']"
    ]
    assert load_config(EvalConfig, None, ["model=m", "data.source=xsum", "splits=validation"]).splits == ("validation",)
    assert load_config(EvalConfig, None, ["model=m", "data.task=wikitext-2", "splits=[validation, test]"]).splits == (
        "valid", "test")
    assert problems(["model=m", "data.task=wikitext2", "splits=dev_matched"], EvalConfig) == [
        "splits: wikitext2 has no split 'dev_matched'; choose from test, valid, train"
    ]


def test_eval_generation_mode_and_language_modelling_rules():
    cfg = load_config(EvalConfig, None, ["model=m", "prompt.text=Hello", "prompt.sample=true", "prompt.top_p=0.9"])
    assert cfg.task is None and (cfg.prompt.max_new_tokens, cfg.prompt.top_p, cfg.prompt.chat) == (32, 0.9, False)
    assert problems(["model=m"], EvalConfig) == [
        "data.task: is required: set data.task (--task), e.g. sst2, xsum or wikitext2 (perplexity), or give "
        "prompt.text (--prompt) to generate text"]
    assert problems(["model=m", "prompt.text=' '", "prompt.temperature=0.5"], EvalConfig) == [
        "prompt.text: must not be empty: give the text to continue",
        "prompt.temperature: is for sampling: set prompt.sample true (the CLI's --temperature / --top-p do)"]
    assert problems(["model=m", "prompt.text=hi", "data.task=sst2"], EvalConfig) == [
        "prompt: generates text; data.task (sst2) scores a task: give one of them"]
    lm = load_config(EvalConfig, None, ["model=m", "data.source=wikitext2"])
    assert (lm.task, lm.task_family, lm.data.seq_len, lm.data.stride, lm.data.max_tokens) == (
        "wikitext2", "lm", 256, None, None)
    assert problems(["model=m", "data.task=wikitext2", "data.stride=0"], EvalConfig) == [
        "data.stride: must be >= 1, got 0"]
    trained = load_config(FinetuneConfig, None, ["model=m", "data.task=wikitext2"])  # decoders train on text too
    assert (trained.task, trained.task_family) == ("wikitext2", "lm")
