"""The original design, for comparison only: Flask + a transformers pipeline, one call per request.

Each Gunicorn (sync) worker loads its own pipeline and classifies every request on its own,
with no batching across requests: the baseline this project replaces.
Run: MODEL_DIR=<dir> gunicorn -w 2 -b 127.0.0.1:PORT 'bench.original_app:create_app()'
"""

import os
import socket

from flask import Flask, jsonify, request


def create_app():
    """Return the original design's app, its pipeline loaded at start-up (threads split across workers)."""
    import torch
    from transformers import pipeline

    torch.set_num_threads(int(os.environ.get("ORIGINAL_TORCH_THREADS", "1")))
    classifier = pipeline("text-classification", model=os.environ["MODEL_DIR"], device="cpu")
    app = Flask(__name__)
    container_id = f"{socket.gethostname()}-original"

    @app.post("/")
    def classify():
        result = classifier(request.get_json()["text"], truncation=True)[0]
        return jsonify({"label": result["label"], "score": result["score"], "container_id": container_id})

    return app
