"""Recipe configs: typed, frozen dataclasses (`schema`) and strict loading/saving (`loading`).

    cfg = load_config(FinetuneConfig, "recipes/tiny/finetune.yaml", ["train.lr=3e-5"], out_dir="runs/x")
    save_config(cfg, "runs/x/run_config.yaml")   # load_config(FinetuneConfig, that path) == cfg
"""

from spikelm_core.config.loading import (
    config_from_dict,
    config_to_dict,
    diff_configs,
    load_config,
    parse_overrides,
    save_config,
)
from spikelm_core.config.schema import (
    TASK_CONFIGS,
    ConfigProblems,
    DataArgs,
    DistillArgs,
    DistillConfig,
    EvalConfig,
    FinetuneConfig,
    GenerateArgs,
    MlmArgs,
    NeuronArgs,
    PretrainConfig,
    TrainArgs,
)

__all__ = [
    "ConfigProblems",
    "DataArgs",
    "DistillArgs",
    "DistillConfig",
    "EvalConfig",
    "FinetuneConfig",
    "GenerateArgs",
    "MlmArgs",
    "NeuronArgs",
    "PretrainConfig",
    "TASK_CONFIGS",
    "TrainArgs",
    "config_from_dict",
    "config_to_dict",
    "diff_configs",
    "load_config",
    "parse_overrides",
    "save_config",
]
