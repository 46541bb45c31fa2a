"""Build model-store/sentiment.mar from a local Hugging Face model dir or a pinned hub revision.

Environment (all optional):
  MODEL_DIR       a local Hugging Face model dir (config, weights, tokenizer); wins over the hub
  MODEL_ID        hub repo id     (default distilbert/distilbert-base-uncased-finetuned-sst-2-english)
  MODEL_REVISION  hub revision    (default 714eb0f, the one transformers' sentiment pipeline pins)
  MODEL_NAME      TorchServe model name and archive name (default: config.properties' load_models)
  MODEL_STORE     output folder   (default model-store next to this project)
  RUNTIME         onnx or torch: overrides model-config.yaml's handler.runtime
  PRECISION       fp32, bf16 or int8: overrides model-config.yaml's handler.precision

With the onnx runtime (the default) the model is exported to model.onnx here (int8: quantized
here too) and the archive holds it instead of the safetensors weights; with torch it holds
the weights. Either way it holds config.json and the tokenizer files.

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
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

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
        )

    @property
    def archive_path(self):
        """Return where the finished archive goes."""
        return self.model_store / f"{self.model_name}.mar"


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


def model_config_text(settings):
    """Return the model-config.yaml to pack: the project's, with RUNTIME and PRECISION applied if given."""
    text = MODEL_CONFIG.read_text()
    if settings.runtime is not None and settings.runtime not in RUNTIMES:
        raise BuildError(f"RUNTIME must be one of {', '.join(RUNTIMES)}, got {settings.runtime!r}")
    if settings.precision is not None and settings.precision not in PRECISIONS:
        raise BuildError(f"PRECISION must be one of {', '.join(PRECISIONS)}, got {settings.precision!r}")
    config = yaml.safe_load(text)
    section = config.setdefault("handler", {})
    for key, value in (("runtime", settings.runtime), ("precision", settings.precision)):
        if value is not None:
            section[key] = value
    runtime, precision = serving_mode(config)
    problem = runtime_precision_problem(runtime, precision)
    if problem:
        raise BuildError(
            f"RUNTIME={runtime} with PRECISION={precision}: {problem} "
            "(set RUNTIME and PRECISION, or handler.runtime/handler.precision in handler/model-config.yaml)."
        )
    if settings.runtime is None and settings.precision is None:
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
    digest.update(model_config_text(settings).encode())
    for path in (HANDLER_FILE, *HANDLER_MODULES, EXPORT_MODULE, *files):
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


def run_archiver(settings, files, info, work_dir):
    """Run torch-model-archiver into `work_dir` and return the archive it wrote."""
    info_file = work_dir / BUILD_INFO
    info_file.write_text(json.dumps(info, indent=2))
    config_file = work_dir / MODEL_CONFIG.name
    config_file.write_text(model_config_text(settings))
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
        packed += exported_model(model_dir, info["runtime"], info["precision"], work_dir)
        built = run_archiver(settings, packed, info, work_dir)
        os.replace(built, settings.archive_path)
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    size_mb = settings.archive_path.stat().st_size / 1e6
    print(f"Built {settings.archive_path} ({size_mb:.1f} MB) from {model_dir.name}.")
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
