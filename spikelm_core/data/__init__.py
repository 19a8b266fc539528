"""Datasets: GLUE (`glue`) with uniform columns text_a, text_b, label, idx."""

from spikelm_core.data.glue import (
    GLUE_TASK_NAMES,
    GLUE_TASKS,
    GlueTask,
    find_glue_task_dir,
    get_glue_task,
    glue_data_dir,
    infer_glue_task,
    load_glue,
    normalize_glue_split,
    normalize_glue_task,
    tokenize_glue,
)

__all__ = [
    "GLUE_TASKS",
    "GLUE_TASK_NAMES",
    "GlueTask",
    "find_glue_task_dir",
    "get_glue_task",
    "glue_data_dir",
    "infer_glue_task",
    "load_glue",
    "normalize_glue_split",
    "normalize_glue_task",
    "tokenize_glue",
]
