"""Pretrained weights from the Hugging Face Hub: already cached, reachable, or one clear error.

Without a network, the Hub client retries each missing file with back-off (open_clip asks for
two names per tag), about 50 s of retries logged twice before any error. One probe without
retries decides instead: cached weights load offline as they are, a Hub that answers gets
open_clip's normal download, and no answer stops at once with what to do.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath

from huggingface_hub import get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError

from inference.spec import ModelLoadError

OPEN_CLIP_WEIGHTS = "open_clip_pytorch_model.bin"  # open_clip's name when a tag gives none
OPEN_CLIP_SAFETENSORS = "open_clip_model.safetensors"
PROBE_TIMEOUT_S = 10


def ensure_downloadable(name: str, pretrained: str, tag: dict) -> None:
    """Raise ModelLoadError at once when `tag`'s weights are neither cached nor reachable."""
    hub = tag.get("hf_hub")
    if not hub:
        return  # a plain URL: open_clip fetches it once, without retries
    model_id, filename = os.path.split(hub)  # as open_clip splits it: "org/repo/" has no file
    filename = filename or OPEN_CLIP_WEIGHTS
    names = {filename, str(PurePosixPath(filename).with_suffix(".safetensors"))}
    if filename == OPEN_CLIP_WEIGHTS:
        names.add(OPEN_CLIP_SAFETENSORS)
    if any(isinstance(try_to_load_from_cache(model_id, n), str) for n in sorted(names)):
        return
    try:
        get_hf_file_metadata(hf_hub_url(model_id, filename), timeout=PROBE_TIMEOUT_S)
    except HfHubHTTPError:
        return  # the Hub answered: open_clip's download reports whatever it said
    except Exception as error:  # no connection, DNS, timeout, HF_HUB_OFFLINE
        raise ModelLoadError(
            f"the weights {pretrained!r} for {name} are not downloaded yet and the Hugging Face "
            f"Hub cannot be reached ({error}). Connect once to download them, or pass a local "
            "file: --pretrained /path/to/open_clip_model.safetensors (or --checkpoint DIR)."
        ) from None
