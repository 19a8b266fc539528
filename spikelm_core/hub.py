"""The Hugging Face hub seen from spikelm: offline flags, one quick reachability probe, the local cache
and snapshot downloads. Which *model* a name means (local directory, alias, bundled MiniLM, hub id)
is decided in `spikelm_core.checkpoints.resolve_source`; datasets use the probe in `spikelm_core.data`.

Hub timeouts are never relied upon: with retries they stretch an unreachable hub to 20-50 s. The
probe is one request through huggingface_hub's own HTTP session (so `HF_ENDPOINT`, proxies from
`HTTPS_PROXY`/`HTTP_PROXY` and a client factory set with `huggingface_hub.set_client_factory` are
honoured), with a short timeout and no retries.
"""

from __future__ import annotations

import os
from pathlib import Path

MODEL_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
DATASET_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
#: Files a model snapshot download fetches: configs, safetensors weights, tokenizer files. Never
#: pickles (*.bin, *.pt) and never code (*.py).
MODEL_FILE_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model")


def offline_flag(variables: tuple[str, ...] = MODEL_OFFLINE_VARS) -> str | None:
    """'VAR=value' for the first environment variable that marks the hub offline, else None."""
    for var in variables:
        value = os.environ.get(var, "")
        if value.strip().lower() in ("1", "true", "yes", "on"):
            return f"{var}={value}"
    return None


def hub_offline() -> bool:
    return offline_flag() is not None


def hub_endpoint() -> str:
    """The hub URL: `HF_ENDPOINT` as set now, else huggingface_hub's configured endpoint."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """One request to the hub endpoint through huggingface_hub's session, no retries.

    Any HTTP answer (even an error status) means the hub can be reached; a connection, proxy, TLS or
    timeout failure means it cannot. Never raises.
    """
    try:
        import httpx2
        from huggingface_hub.utils import get_session

        get_session().head(f"{hub_endpoint()}/api/models", timeout=httpx2.Timeout(timeout_s), follow_redirects=False)
        return True
    except Exception:  # transport errors, offline mode enforced by huggingface_hub, a broken client
        return False


def cached_snapshot(repo_id: str) -> Path | None:
    """The directory of `repo_id` in the local Hugging Face cache (it holds config.json), else None."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:
        return None
    return Path(hit).parent if isinstance(hit, str) else None


def download_snapshot(repo_id: str) -> Path:
    """Download the model files of `repo_id` (no pickles, no code) and return the snapshot directory.

    Raises whatever huggingface_hub raises; callers map it to their own error.
    """
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(repo_id, allow_patterns=list(MODEL_FILE_PATTERNS)))
