"""The two ways a worker runs the classifier: ONNX Runtime (the CPU default) or torch.

Both take the tokenizer's numpy `input_ids` and `attention_mask` and return float32 numpy
logits, so the handler does not care which one it holds. The handler picks one in
`initialize` (`loaded_model`); TorchServe requires the handler module itself to define
exactly one class, so they live here.
"""

import logging
import time
import warnings
from pathlib import Path

import numpy as np
from transformers import AutoConfig

from sentiment_requests import PAD_MULTIPLE

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
# ONNX Runtime's worker threads busy-wait between operators by default, which is fastest on
# cores nobody else wants. Here the Java frontend, the facade's Gunicorn workers and nginx share
# the cores, and threads that spin (also while the worker waits for its next batch) take their
# CPU time. Off costs about nothing alone and keeps a crowded box responsive (the measurements:
# docs/performance.md, "What was tuned").
ALLOW_SPINNING = "0"


class OnnxModel:
    """The exported model.onnx in one ONNX Runtime session on the CPU (one per worker)."""

    def __init__(self, model_dir, threads):
        # Imported here so a torch-runtime worker never loads onnxruntime.
        import onnxruntime

        path = Path(model_dir) / ONNX_FILE
        if not path.is_file():
            raise FileNotFoundError(
                f"{path.name} is missing from the archive: handler.runtime onnx needs an archive "
                "built by `make mar` with RUNTIME=onnx (or set RUNTIME=torch)."
            )
        options = onnxruntime.SessionOptions()
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        # One operator at a time: a BERT graph is a chain, a second pool would only compete.
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", ALLOW_SPINNING)
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = {model_input.name for model_input in self.session.get_inputs()}
        self.config = AutoConfig.from_pretrained(model_dir, local_files_only=True)
        self.device = "cpu"
        self.description = f"ONNX Runtime {onnxruntime.__version__} ({path.name})"

    def logits(self, input_ids, attention_mask):
        """Return the logits (float32, one row per text) of one padded pass."""
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        (logits,) = self.session.run(["logits"], {name: feed[name] for name in self.input_names})
        return logits


class TorchModel:
    """The safetensors weights in eager torch: on the assigned GPU, or on the CPU in fp32/bf16/int8."""

    def __init__(self, model_dir, device, precision, threads):
        import torch
        from transformers import AutoModelForSequenceClassification

        self.torch = torch
        if device.type == "cpu":
            torch.set_num_threads(threads)
        self.device = device
        self.precision = precision
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, local_files_only=True, dtype=torch.float32
        )
        self.model = model.to(device).eval()
        if precision == "int8":
            self.model = dynamically_quantized(self.model)
        self.config = self.model.config
        self.description = f"torch {torch.__version__} on {device}"

    def logits(self, input_ids, attention_mask):
        """Return the logits (float32, one row per text) of one padded pass."""
        torch = self.torch
        inputs = {
            "input_ids": torch.from_numpy(input_ids).to(self.device),
            "attention_mask": torch.from_numpy(attention_mask).to(self.device),
        }
        # bf16 autocast on the CPU uses AMX/avx512_bf16 where the CPU has them; a no-op otherwise.
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16")
        with torch.inference_mode(), autocast:
            return self.model(**inputs).logits.float().cpu().numpy()


def dynamically_quantized(model):
    """Return the model with its Linear layers quantized to int8 (weights ahead, activations per call)."""
    import torch

    # torch.ao.quantization is deprecated in favour of the separate torchao package but still
    # ships (and works) in the pinned torch 2.13; the warning would only repeat per worker.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def cuda_device(gpu_id):
    """Return the CUDA device TorchServe assigned to this worker, or None (no GPU, or no CUDA torch)."""
    import torch

    if gpu_id is not None and torch.cuda.is_available():
        return torch.device(f"cuda:{gpu_id}")
    return None


def loaded_model(model_dir, options, gpu_id=None):
    """Return the model of the configured runtime, ready to run.

    The onnxruntime wheel is CPU only, so the onnx runtime always runs on the CPU; a GPU is
    used by the torch runtime (RUNTIME=torch at `make mar`), whose archive holds the weights.
    """
    import torch

    cuda = cuda_device(gpu_id)
    if options.runtime == "onnx":
        if cuda is not None:
            logger.warning("TorchServe assigned GPU %s, but the onnx runtime runs on the CPU; "
                           "build the archive with RUNTIME=torch to use the GPU", gpu_id)  # fmt: skip
        return OnnxModel(model_dir, options.threads)
    return TorchModel(model_dir, cuda or torch.device("cpu"), options.precision, options.threads)


def softmax(logits):
    """Return the row-wise softmax of `logits`, in float64 (exact enough for float32 scores)."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def warmup_shapes(max_length, max_batch_tokens, multiple=PAD_MULTIPLE):
    """Return the (texts, padded length) passes to run before READY, most valuable first.

    First the largest pass the handler can make (the longest texts, as many as fit in
    max_batch_tokens): it takes memory to its plateau. Then every padded length (multiples of
    `multiple`, as the tokenizer pads) from short to long, each alone and in a full pass, so that
    kernels for the shapes real traffic brings are chosen before the first user comes.
    """
    longest = max(multiple, max_length // multiple * multiple)
    shapes = [(max(1, max_batch_tokens // longest), longest)]
    for length in range(multiple, longest + 1, multiple):
        for texts in (1, max(1, max_batch_tokens // length)):
            if (texts, length) not in shapes:
                shapes.append((texts, length))
    return shapes


def warm_up(model, shapes, budget_s, token_id):
    """Run `model` over `shapes` in order until `budget_s` seconds are spent; return the shapes run.

    The first shape always runs; the budget is checked before each next one, so the warm-up
    ends at most one pass after it.
    """
    deadline = time.monotonic() + budget_s
    done = []
    for texts, length in shapes:
        if done and time.monotonic() >= deadline:
            break
        input_ids = np.full((texts, length), token_id, dtype=np.int64)
        model.logits(input_ids, np.ones_like(input_ids))
        done.append((texts, length))
    return done
