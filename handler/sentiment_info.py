"""Who this worker is: the model, its revision and the archive's version, as `make mar` recorded them.

Pure Python (no torch). tools/build_mar.py writes build-info.json into the archive and gives the
archive a version derived from everything packed in it (TorchServe's --version, in the manifest);
the handler stamps that version on each answer and reports the rest on a describe job (a request
with DESCRIBE_HEADER, answered without running the model) and through describe_handle.
"""

import json
import re
from pathlib import Path

BUILD_INFO = "build-info.json"
# The response header carrying the archive version that answered (TorchServe passes it on).
MODEL_VERSION_HEADER = "X-Model-Version"
# A request on the inference API carrying this header is a describe job: the worker answers with
# its description (the facade's /info and readiness), never runs the model, ignores the body.
DESCRIBE_HEADER = "X-Sentiment-Describe"
# W3C Trace Context: version-traceid-parentid-flags; the facade passes the caller's on.
TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def trace_id_of(traceparent):
    """Return the trace ID of a `traceparent` header value, or None when absent or malformed."""
    if isinstance(traceparent, bytes | bytearray):
        traceparent = bytes(traceparent).decode("ascii", "replace")
    match = TRACEPARENT.fullmatch(traceparent.strip()) if isinstance(traceparent, str) else None
    return match.group(1) if match and match.group(1) != "0" * 32 else None


def model_identity(model_dir, manifest, config):
    """Return the model's identity: id, revision, archive version, labels (in id order), precision choice."""
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
        # PRECISION=auto's decision (tools/precision_gate.py): which precision was packed and why.
        "precision_choice": built.get("precision_choice"),
    }
