"""Fill TorchServe's model store in Docker: the one-shot `model` service of docker-compose.yml.

Looks at the read-only source mount (MODEL_SOURCE, default /model-source; Compose mounts
${MODEL_DIR:-./model-store} there) and puts <MODEL_NAME>.mar into MODEL_STORE:

1. the source is a Hugging Face model dir (has config.json): build the archive from it;
2. the source holds a prebuilt <MODEL_NAME>.mar: copy it into the store if it differs;
3. otherwise: build from MODEL_ID@MODEL_REVISION on the hub (the pinned default), downloading into
   the Hugging Face cache (a volume, so a restart does not download again).

Building reuses build_mar.py, so an up-to-date archive is never rebuilt and a half-built one never
lands in the store. Exits 1 with a readable message when no archive can be made.
"""

import dataclasses
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

from tools.build_mar import BuildError, BuildSettings, build

DEFAULT_SOURCE = "/model-source"


def install_archive(archive, target):
    """Copy a prebuilt archive to `target` unless identical; atomic (temp file + rename)."""
    if target.is_file() and filecmp.cmp(archive, target, shallow=False):
        print(f"{target} is up to date (same as {archive}).")
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=".copy-", suffix=".mar", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as temp, archive.open("rb") as source:
            shutil.copyfileobj(source, temp, 1 << 20)
        os.replace(temp_name, target)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    print(f"Copied the prebuilt {archive} to {target} ({target.stat().st_size / 1e6:.1f} MB).")
    return target


def prepare(source, settings):
    """Put the archive into settings.model_store from `source` (see the module docstring)."""
    if (source / "config.json").is_file():
        print(f"Building the archive from the local model dir mounted at {source}.")
        return build(dataclasses.replace(settings, model_dir=source.resolve()))
    prebuilt = source / settings.archive_path.name
    if prebuilt.is_file():
        return install_archive(prebuilt, settings.archive_path)
    print(f"No model dir or {prebuilt.name} at {source}: using {settings.model_id}@{settings.model_revision}.")
    return build(dataclasses.replace(settings, model_dir=None))


def main(environ=os.environ):
    """Command-line entry point: exit 1 with a readable message on failure."""
    source = Path(environ.get("MODEL_SOURCE") or DEFAULT_SOURCE)
    try:
        prepare(source, BuildSettings.from_env(environ))
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        print(
            f"In Docker: MODEL_DIR=/path/to/model docker compose up (mounted at {source}), "
            "or put a prebuilt sentiment.mar into ./model-store (`make mar MODEL_DIR=...`).",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
