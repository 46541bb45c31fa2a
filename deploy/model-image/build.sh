#!/usr/bin/env bash
# Build sentiment-torchserve-model: the TorchServe image plus the model archive (see Dockerfile).
#
#   deploy/model-image/build.sh [ARCHIVE]
#
# ARCHIVE defaults to $MODEL_STORE/sentiment.mar ($MODEL_STORE: model-store), the file `make mar`
# writes. The build context is a tar of this folder's Dockerfile and the archive only.
# Environment: TORCHSERVE_IMAGE (sentiment-torchserve), MODEL_IMAGE (sentiment-torchserve-model),
# REQUIRE_RUNTIME (unset; torch for a GPU image: `make gpu-model-image` sets it): an archive built
# for another runtime is refused, so an ONNX archive, which runs on the CPU only, never lands in a
# GPU image. The image is labelled with the archive's runtime and precision (build-info.json).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
archive="${1:-${MODEL_STORE:-$root/model-store}/sentiment.mar}"
base="${TORCHSERVE_IMAGE:-sentiment-torchserve}"
image="${MODEL_IMAGE:-sentiment-torchserve-model}"

[ -f "$archive" ] || { echo "error: no model archive at $archive: run 'make mar' (MODEL_DIR=/path/to/model)" >&2; exit 1; }
# "runtime precision" as tools/build_mar.py recorded them in the archive.
built="$(python3 -c 'import json, sys, zipfile
info = json.loads(zipfile.ZipFile(sys.argv[1]).read("build-info.json"))
print(info["runtime"], info["precision"])' "$archive" 2>/dev/null)" \
    || { echo "error: $archive has no build-info.json: build it with 'make mar'" >&2; exit 1; }
read -r runtime precision <<<"$built"
if [ -n "${REQUIRE_RUNTIME:-}" ] && [ "$runtime" != "$REQUIRE_RUNTIME" ]; then
    echo "error: $archive was built with RUNTIME=$runtime and $image needs RUNTIME=$REQUIRE_RUNTIME:" \
        "build it with RUNTIME=$REQUIRE_RUNTIME (for the GPU overlay: make gpu-model-image)" >&2
    exit 1
fi
docker image inspect "$base" >/dev/null 2>&1 \
    || { echo "error: no image $base: build it first ('make swarm-up' builds every image)" >&2; exit 1; }

previous="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
# GNU tar: both files at the context's root, owned by root (the archive stays read-only for the
# non-root model-server user).
tar --owner=0 --group=0 --mode=a+r,u+w,go-w -c \
    -C "$here" Dockerfile \
    --transform 's|.*\.mar$|sentiment.mar|' -C "$(dirname "$archive")" "$(basename "$archive")" \
    | docker build --quiet --build-arg TORCHSERVE_IMAGE="$base" \
        --label "sentiment.runtime=$runtime" --label "sentiment.precision=$precision" -t "$image" - >/dev/null
# A rebuild leaves the previous image untagged: drop it unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(docker image inspect -f '{{.Id}}' "$image")" ] \
    && [ -z "$(docker image inspect -f '{{join .RepoTags ","}}' "$previous" 2>/dev/null)" ]; then
    docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "built $image from $base and $archive ($runtime $precision, $(du -h "$archive" | cut -f1))"
