"""Build model-store/sentiment.mar from a local Hugging Face model dir or a pinned hub revision.

Environment (all optional):
  MODEL_DIR       a local Hugging Face model dir (config, weights, tokenizer); wins over the hub
  MODEL_ID        hub repo id     (default distilbert/distilbert-base-uncased-finetuned-sst-2-english)
  MODEL_REVISION  hub revision    (default 714eb0f, the one transformers' sentiment pipeline pins)
  MODEL_NAME      TorchServe model name and archive name (default: config.properties' load_models)
  MODEL_STORE     output folder   (default model-store next to this project)
  RUNTIME         onnx or torch: overrides model-config.yaml's handler.runtime
  PRECISION       auto, fp32, bf16 or int8: overrides model-config.yaml's handler.precision (auto)
  AGREEMENT_SAMPLE  with auto: a UTF-8 file of texts, one a line, to check int8 on
                  (default tools/agreement/sentences.txt, 1,200 sentences, CC0)
  MAX_FLIP_RATE   with auto: the share of labels int8 may flip, 0 to 1 (default 0.01)

With the onnx runtime (the default) the model is exported to model.onnx here (int8: quantized
here too) and the archive holds it instead of the safetensors weights; with torch it holds
the weights. Either way it holds config.json and the tokenizer files. auto packs int8 when it
agrees with fp32 on the sample (tools/precision_gate.py), else fp32, and records why in
build-info.json; the packed model-config.yaml names the precision it chose.

The archive is written to a private temp dir and moved into place only when complete, so a
failed build never leaves a half-written .mar. It is rebuilt only when an input changed.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from tools import precision_gate
from tools.packed import HANDLER_DIR, PROJECT_DIR, TOOLS_DIR
from tools.torchserve_config import model_name, properties

from sentiment_config import PRECISIONS, RUNTIMES, HandlerOptions, runtime_precision_problem
from sentiment_info import BUILD_INFO

HANDLER_FILE = HANDLER_DIR / "sentiment_handler.py"
HANDLER_MODULES = (
    HANDLER_DIR / "sentiment_requests.py",
    HANDLER_DIR / "sentiment_config.py",
    HANDLER_DIR / "sentiment_runtime.py",
    HANDLER_DIR / "sentiment_info.py",
    HANDLER_DIR / "sentiment_truncation.py",
)
# Not packed, but what it writes is: a change to the export rebuilds the archive.
EXPORT_MODULE = TOOLS_DIR / "onnx_export.py"
GATE_MODULE = TOOLS_DIR / "precision_gate.py"
# auto is resolved here, at build time, into one of the handler's precisions.
AUTO = "auto"
BUILD_PRECISIONS = (AUTO, *PRECISIONS)
ONNX_FILE = "model.onnx"
MODEL_CONFIG = HANDLER_DIR / "model-config.yaml"
# Bumped when the layout of the archive itself changes; part of every fingerprint.
ARCHIVE_FORMAT = "2"
# The archive's version (TorchServe's --version) is the start of its fingerprint: it changes when
# anything packed changes (weights, tokenizer, handler code, model-config.yaml, runtime, precision)
# and only then, so two archives with one version serve the same answers.
VERSION_CHARS = 12

# What from_pretrained needs for a sequence classifier; READMEs, other frameworks' weights
# and training leftovers stay out of the archive.
MODEL_PATTERNS = (
    "config.json",
    "*.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "*.model",
)


class BuildError(RuntimeError):
    """The archive cannot be built; the message says what to change."""


@dataclass(frozen=True)
class BuildSettings:
    """Inputs of one build, from the environment."""

    model_dir: Path | None
    model_id: str
    model_revision: str
    model_name: str
    model_store: Path
    precision: str | None = None
    runtime: str | None = None
    agreement_sample: Path = precision_gate.SAMPLE
    max_flip_rate: float = precision_gate.MAX_FLIP_RATE

    @classmethod
    def from_env(cls, environ=os.environ):
        """Return the settings named in the module docstring."""
        model_dir = environ.get("MODEL_DIR") or None
        return cls(
            model_dir=Path(model_dir).resolve() if model_dir else None,
            model_id=environ.get("MODEL_ID") or "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
            model_revision=environ.get("MODEL_REVISION") or "714eb0f",
            model_name=environ.get("MODEL_NAME") or model_name(properties()),
            model_store=Path(environ.get("MODEL_STORE") or PROJECT_DIR / "model-store").resolve(),
            precision=environ.get("PRECISION") or None,
            runtime=environ.get("RUNTIME") or None,
            agreement_sample=Path(environ.get("AGREEMENT_SAMPLE") or precision_gate.SAMPLE).resolve(),
            max_flip_rate=max_flip_rate(environ.get("MAX_FLIP_RATE")),
        )

    @property
    def archive_path(self):
        """Return where the finished archive goes."""
        return self.model_store / f"{self.model_name}.mar"


def max_flip_rate(text):
    """Return MAX_FLIP_RATE from the environment's text (unset: the gate's default)."""
    if not text:
        return precision_gate.MAX_FLIP_RATE
    try:
        return precision_gate.max_flip_rate_from(text)
    except ValueError as exc:
        raise BuildError(str(exc)) from exc


def sample_label(path):
    """Return how build-info.json names an agreement sample: the project's by its path, a user's by its name."""
    path = Path(path)
    return str(path.relative_to(PROJECT_DIR)) if path.is_relative_to(PROJECT_DIR) else path.name


def downloaded_model_dir(model_id, revision):
    """Return a local snapshot of the hub model (downloaded with a progress bar, or cached)."""
    # Imported here so building from a local dir never touches the hub client.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    print(f"Downloading {model_id}@{revision} from the Hugging Face hub ...", flush=True)
    try:
        return Path(snapshot_download(model_id, revision=revision, allow_patterns=list(MODEL_PATTERNS)))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as exc:
        raise BuildError(
            f"Could not download {model_id}@{revision} from the Hugging Face hub ({type(exc).__name__}). "
            "Offline? Point MODEL_DIR at a local Hugging Face model dir instead, "
            "e.g. `make mar MODEL_DIR=/path/to/model`."
        ) from exc


def model_files(model_dir):
    """Return the files of `model_dir` that the archive needs, or raise if it is not a model."""
    if not model_dir.is_dir():
        raise BuildError(f"MODEL_DIR={model_dir} is not a directory. Point it at a Hugging Face model dir.")
    files = sorted({path for pattern in MODEL_PATTERNS for path in model_dir.glob(pattern) if path.is_file()})
    names = {path.name for path in files}
    if "config.json" not in names:
        raise BuildError(f"{model_dir} has no config.json: it is not a Hugging Face model dir.")
    if not any(name.endswith(".safetensors") for name in names):
        raise BuildError(f"{model_dir} has no *.safetensors weights; save the model with safe_serialization.")
    if not names & {"tokenizer.json", "vocab.txt", "vocab.json"} and not any(n.endswith(".model") for n in names):
        raise BuildError(f"{model_dir} has no tokenizer files (tokenizer.json or a vocabulary).")
    return files


def model_config_text(settings, packed_precision=None):
    """Return the model-config.yaml for `settings`: the project's, with RUNTIME and PRECISION applied if given.

    `packed_precision` is what auto resolved to: the archive's copy names it, never auto.
    """
    text = MODEL_CONFIG.read_text()
    if settings.runtime is not None and settings.runtime not in RUNTIMES:
        raise BuildError(f"RUNTIME must be one of {', '.join(RUNTIMES)}, got {settings.runtime!r}")
    if settings.precision is not None and settings.precision not in BUILD_PRECISIONS:
        raise BuildError(f"PRECISION must be one of {', '.join(BUILD_PRECISIONS)}, got {settings.precision!r}")
    config = yaml.safe_load(text)
    section = config.setdefault("handler", {})
    for key, value in (("runtime", settings.runtime), ("precision", packed_precision or settings.precision)):
        if value is not None:
            section[key] = value
    runtime, precision = serving_mode(config)
    if precision not in BUILD_PRECISIONS:
        raise BuildError(f"handler.precision in {MODEL_CONFIG.name} must be one of {', '.join(BUILD_PRECISIONS)}")
    # auto packs fp32 or int8, and int8 runs on either runtime: only the fixed precisions can clash.
    problem = runtime_precision_problem(runtime, precision) if precision != AUTO else None
    if problem:
        raise BuildError(
            f"RUNTIME={runtime} with PRECISION={precision}: {problem} "
            "(set RUNTIME and PRECISION, or handler.runtime/handler.precision in handler/model-config.yaml)."
        )
    if settings.runtime is None and settings.precision is None and packed_precision is None:
        return text
    return yaml.safe_dump(config, sort_keys=False)


def serving_mode(config):
    """Return (runtime, precision) of a parsed model-config.yaml, defaults filled in."""
    section = config.get("handler") or {}
    return section.get("runtime", HandlerOptions.runtime), section.get("precision", HandlerOptions.precision)


def archived_files(files, runtime):
    """Return the model files to pack as they are: the weights only for the torch runtime."""
    if runtime == "torch":
        return files
    return [path for path in files if not path.name.endswith(".safetensors")]


def inputs_fingerprint(settings, files):
    """Return a hash of everything that ends up in the archive, to skip needless rebuilds."""
    digest = hashlib.sha256(f"{settings.model_name}:{ARCHIVE_FORMAT}".encode())
    config_text = model_config_text(settings)
    digest.update(config_text.encode())
    gate_inputs = ()
    if serving_mode(yaml.safe_load(config_text))[1] == AUTO:
        if not settings.agreement_sample.is_file():
            raise BuildError(
                f"AGREEMENT_SAMPLE={settings.agreement_sample} is not a file: give a UTF-8 file of texts, one a line"
            )
        digest.update(f"max_flip_rate={settings.max_flip_rate}".encode())
        gate_inputs = (GATE_MODULE, settings.agreement_sample)
    for path in (HANDLER_FILE, *HANDLER_MODULES, EXPORT_MODULE, *gate_inputs, *files):
        digest.update(path.name.encode())
        with path.open("rb") as stream:
            for chunk in iter(lambda: stream.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def archived_build_info(archive_path):
    """Return the build info recorded in an existing archive, or {}."""
    try:
        with zipfile.ZipFile(archive_path) as archive:
            return json.loads(archive.read(BUILD_INFO))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return {}


def build_info(settings, fingerprint):
    """Return the provenance recorded in the archive (no local paths)."""
    source = (
        {"model_dir": settings.model_dir.name}
        if settings.model_dir
        else {"model_id": settings.model_id, "revision": settings.model_revision}
    )
    runtime, precision = serving_mode(yaml.safe_load(model_config_text(settings)))
    return {
        "fingerprint": fingerprint,
        "archive_version": archive_version(fingerprint),
        "model_name": settings.model_name,
        "runtime": runtime,
        "precision": precision,
        **source,
    }


def archive_version(fingerprint):
    """Return the archive version for a build's fingerprint."""
    return fingerprint[:VERSION_CHARS]


def exported_model(model_dir, runtime, precision, work_dir):
    """Return [model.onnx] exported into `work_dir` for the onnx runtime, or [] for torch."""
    if runtime != "onnx":
        return []
    from tools.onnx_export import export_onnx

    print(f"Exporting {model_dir.name} to ONNX ({precision}) ...", flush=True)
    return [export_onnx(model_dir, work_dir / ONNX_FILE, precision)]


def auto_choice(settings, model_dir, runtime, work_dir):
    """Return PRECISION=auto's decision; for onnx, leave the model it chose in `work_dir` as model.onnx."""
    if runtime != "onnx":
        decision = precision_gate.torch_choice()
    else:
        from transformers import AutoConfig, AutoTokenizer

        from tools.onnx_export import export_onnx

        try:
            sentences = precision_gate.sample_sentences(settings.agreement_sample)
        except ValueError as exc:
            raise BuildError(str(exc)) from exc
        print(f"Exporting {model_dir.name} to ONNX (fp32, then int8 if it agrees; PRECISION=auto) ...", flush=True)
        target = export_onnx(model_dir, work_dir / ONNX_FILE, "fp32")
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
        labels = AutoConfig.from_pretrained(model_dir, local_files_only=True).id2label
        started = time.monotonic()
        decision = precision_gate.gated_int8(
            target,
            target,
            tokenizer,
            sentences,
            labels,
            settings.max_flip_rate,
            sample_label(settings.agreement_sample),
        )
        print(f"int8 check took {time.monotonic() - started:.0f} s", flush=True)
    print(f"PRECISION=auto packs {decision['reason']}", flush=True)
    return decision


def run_archiver(settings, files, info, work_dir):
    """Run torch-model-archiver into `work_dir` and return the archive it wrote."""
    info_file = work_dir / BUILD_INFO
    info_file.write_text(json.dumps(info, indent=2))
    config_file = work_dir / MODEL_CONFIG.name
    config_file.write_text(model_config_text(settings, packed_precision=info["precision"]))
    extra_files = [*HANDLER_MODULES, info_file, *files]
    command = [
        sys.executable,
        "-m",
        "model_archiver.model_packaging",
        "--model-name", settings.model_name,
        "--version", info["archive_version"],
        "--handler", str(HANDLER_FILE),
        "--extra-files", ",".join(str(path) for path in extra_files),
        "--config-file", str(config_file),
        "--export-path", str(work_dir),
        # Weights do not compress; storing them makes building and worker start-up faster.
        "--archive-format", "zip-store",
    ]  # fmt: skip
    # The archiver stages in $TMPDIR/<model-name> and deletes it first: keep builds apart.
    env = {**os.environ, "TMPDIR": str(work_dir)}
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise BuildError(f"torch-model-archiver failed:\n{result.stdout}{result.stderr}")
    return work_dir / f"{settings.model_name}.mar"


def source_model_dir(settings):
    """Return the model dir to pack: MODEL_DIR, else a download of MODEL_ID@MODEL_REVISION."""
    if settings.model_dir:
        return settings.model_dir
    try:
        return downloaded_model_dir(settings.model_id, settings.model_revision)
    except BuildError:
        built = archived_build_info(settings.archive_path)
        if (built.get("model_id"), built.get("revision")) != (settings.model_id, settings.model_revision):
            raise
        # Offline with an archive of the same pinned model: serving it beats failing.
        print(f"warning: hub unreachable; keeping {settings.archive_path} (same model and revision).")
        return None


def build(settings):
    """Build the archive unless an identical one exists; return its path."""
    model_dir = source_model_dir(settings)
    if model_dir is None:
        return settings.archive_path
    files = model_files(model_dir)
    fingerprint = inputs_fingerprint(settings, files)
    if archived_build_info(settings.archive_path).get("fingerprint") == fingerprint:
        print(f"{settings.archive_path} is up to date.")
        return settings.archive_path
    settings.model_store.mkdir(parents=True, exist_ok=True)
    # Same file system as the target, so the final rename is atomic.
    work_dir = Path(tempfile.mkdtemp(prefix=".build-", dir=settings.model_store))
    info = build_info(settings, fingerprint)
    try:
        packed = archived_files(files, info["runtime"])
        if info["precision"] == AUTO:
            decision = auto_choice(settings, model_dir, info["runtime"], work_dir)
            info = {**info, "precision": decision["precision"], "precision_choice": decision}
            packed += [work_dir / ONNX_FILE] if info["runtime"] == "onnx" else []
        else:
            packed += exported_model(model_dir, info["runtime"], info["precision"], work_dir)
        built = run_archiver(settings, packed, info, work_dir)
        os.replace(built, settings.archive_path)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    size_mb = settings.archive_path.stat().st_size / 1e6
    mode = f"{info['runtime']} {info['precision']}"
    print(f"Built {settings.archive_path} ({size_mb:.1f} MB, {mode}) from {model_dir.name}.")
    return settings.archive_path


def main():
    """Command-line entry point: exit 1 with a readable message on failure."""
    try:
        build(BuildSettings.from_env())
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
