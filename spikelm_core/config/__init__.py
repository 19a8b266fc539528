"""Recipe configs: frozen pydantic models (`schema`) and strict loading/saving (`loading`).

    cfg = load_config(FinetuneConfig, "recipes/tiny/finetune.yaml", ["train.lr=3e-5"], out_dir="runs/x")
    cfg.command, cfg.task, cfg.task_family    # 'finetune', 'sst2', 'glue'
    save_config(cfg, "runs/x/run_config.yaml")   # load_config(FinetuneConfig, that path) == cfg
"""

from spikelm_core.config.loading import (
    config_from_dict,
    config_to_dict,
    describe_config,
    diff_configs,
    load_config,
    parse_overrides,
    save_config,
    set_dotted,
)
from spikelm_core.config.schema import (
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
    SweepArgs,
    SweepEnergyArgs,
    TaskFamily,
    TrainArgs,
    infer_task,
    normalize_task,
    task_family,
)

__all__ = [
    "DataArgs",
    "DistillArgs",
    "DistillConfig",
    "EvalConfig",
    "FinetuneConfig",
    "GenerateArgs",
    "MlmArgs",
    "NeuronArgs",
    "NeuronSettings",
    "PretrainConfig",
    "PromptArgs",
    "SweepArgs",
    "SweepEnergyArgs",
    "TASK_CONFIGS",
    "TASK_NAMES",
    "TaskFamily",
    "TrainArgs",
    "config_from_dict",
    "config_to_dict",
    "describe_config",
    "diff_configs",
    "infer_task",
    "load_config",
    "normalize_task",
    "parse_overrides",
    "save_config",
    "set_dotted",
    "task_family",
]
