"""Who this worker is: the model, its revision and the archive's version, as `make mar` recorded them.

Pure Python (no torch). tools/build_mar.py writes build-info.json into the archive and gives the
archive a version derived from everything packed in it (TorchServe's --version, in the manifest);
the handler stamps that version on each answer and reports the rest through describe_handle.
"""

import json
from pathlib import Path

BUILD_INFO = "build-info.json"
# The response header carrying the archive version that answered (TorchServe passes it on).
MODEL_VERSION_HEADER = "X-Model-Version"


def model_identity(model_dir, manifest, config):
    """Return the model's identity: id, revision, archive version and labels (in id order)."""
    try:
        built = json.loads((Path(model_dir) / BUILD_INFO).read_text())
    except (OSError, ValueError):
        built = {}
    model = (manifest or {}).get("model") or {}
    id2label = config.id2label
    return {
        "model_name": model.get("modelName") or built.get("model_name") or "sentiment",
        # A hub model has an id and a revision; a local model dir only its folder's name.
        "model_id": built.get("model_id") or built.get("model_dir") or getattr(config, "_name_or_path", "") or "",
        "revision": built.get("revision") or built.get("fingerprint", "")[:12] or "unknown",
        "archive_version": str(model.get("modelVersion") or built.get("archive_version") or "unknown"),
        "labels": [id2label[index] for index in sorted(id2label)],
    }
