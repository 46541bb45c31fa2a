# The sentiment service's three images, one named target each:
#
#   docker build --target nginx      -t sentiment-nginx      .
#   docker build --target facade     -t sentiment-facade     .
#   docker build --target torchserve -t sentiment-torchserve .
#
# docker-compose.yml builds all three (`docker compose up --build`). Works with BuildKit and with
# the legacy builder (Compose 1.29); no `# syntax=` line, so BuildKit never pulls a frontend image.
# The legacy builder builds every stage before the target, so the cheap stages come first.
#
# Every image runs as its own non-root user (UID/GID 10001), listens only on ports >= 1024 and has
# a HEALTHCHECK. Python packages come only from the lock files (facade/requirements.lock,
# tools/requirements.lock: exact versions and the sha256 of every file; `make lock` writes them
# from pyproject.toml), except the CPU torch wheel, pinned by version (see the torchserve build).
# docker-compose.yml adds read-only root filesystems, memory limits and no capabilities.
# Base images are build arguments: the official python:3.11-slim-bookworm and debian:bookworm-slim by
# default, named with their Debian suite (a suite-less tag moves to the next Debian when Docker Hub
# does: Java 17 and the locks' glibc are bookworm's; docs/docker.md says why bookworm). These two
# defaults are the one place that names them: .ci/build-base-images.sh reads its stand-ins' suite
# and Python from them. An air-gapped host names its own instead, e.g. those local stand-ins
# (`make docker-up OFFLINE_BASES=1`, or
# `docker build --build-arg PYTHON_IMAGE=sentiment-local/python:3.11-slim-bookworm ...`), or pins
# a digest (python:3.11-slim-bookworm@sha256:...).
# The locks carry the wheels of linux/amd64 and linux/arm64 (CPython 3.11, glibc 2.36).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG DEBIAN_IMAGE=debian:bookworm-slim

# ----------------------------------------------------------------------------------------- nginx
# Debian's nginx (1.22) on DEBIAN_IMAGE (debian:bookworm-slim). The entrypoint renders
# nginx/nginx.conf.template into /tmp/nginx and execs nginx as PID 1; logs go to the container's
# stdout/stderr.
FROM ${DEBIAN_IMAGE} AS nginx

RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends nginx-light gettext-base; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log; \
    # The image's own site and default config are not used; keep nothing that listens on :80.
    rm -f /etc/nginx/sites-enabled/default; \
    # nginx opens its compiled-in log paths in a few places before reading our config.
    ln -sf /dev/stdout /var/log/nginx/access.log; \
    ln -sf /dev/stderr /var/log/nginx/error.log; \
    groupadd --gid 10001 nginx; \
    useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin nginx

COPY nginx/nginx.conf.template nginx/topology.docker.conf nginx/defaults.env /etc/sentiment-nginx/
COPY nginx/docker-entrypoint.sh /usr/local/bin/sentiment-nginx-entrypoint

# The entrypoint substitutes every NGINX_* variable into the template (and nothing else), and
# refuses to start when a placeholder of the template has no value: each ${NGINX_X} placeholder
# needs its default here or in nginx/defaults.env, the tunables' one home, which the native
# launcher reads too (tests/unit/test_docker_files.py checks that every placeholder has one).
ENV NGINX_RUN_DIR=/tmp/nginx \
    NGINX_DEFAULTS=/etc/sentiment-nginx/defaults.env \
    NGINX_ERROR_LOG=stderr \
    NGINX_ACCESS_LOG=/dev/stdout \
    NGINX_MAX_BODY_SIZE=1048576 \
    NGINX_MAX_BODY_LABEL="1 MiB" \
    NGINX_PROXY_READ_TIMEOUT=30s \
    NGINX_TOPOLOGY_CONF=/etc/sentiment-nginx/topology.docker.conf \
    NGINX_LISTEN=8080

USER 10001:10001
EXPOSE 8080
# SIGQUIT is nginx's graceful shutdown: in-flight requests finish, idle connections close.
STOPSIGNAL SIGQUIT
# No curl in the image: bash's /dev/tcp sends GET /healthz through nginx to a facade.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && read -r -t 3 status <&3 && [[ $status == HTTP/1.?' 200 '* ]]"]
ENTRYPOINT ["/usr/local/bin/sentiment-nginx-entrypoint"]

# ---------------------------------------------------------------------------------- facade build
# Only the facade's dependencies (Flask, Gunicorn, requests, prometheus-client; the facade never
# imports torch), exactly as facade/requirements.lock pins them: every file is checked against its
# sha256 (--require-hashes), nothing unlisted is pulled in (--no-deps), and `pip check` proves the
# set complete. The lock comes from pyproject.toml's `facade` group (devtools/lock.py, `make lock`).
FROM ${PYTHON_IMAGE} AS facade-build

# pip names each file it fetches and installs (no progress bars: a build log shows them as noise),
# so a long install is never minutes of silence.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off
COPY facade/requirements.lock /tmp/requirements.lock
RUN set -eux; \
    python -m venv /opt/venv; \
    /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock; \
    /opt/venv/bin/pip check; \
    # No installer in the final image (nor the venv's setuptools, which nothing here uses).
    /opt/venv/bin/pip uninstall --quiet --yes pip setuptools; \
    /opt/venv/bin/python -c "import flask, gunicorn, prometheus_client, requests"

# ---------------------------------------------------------------------------------------- facade
# Gunicorn is PID 1: it turns SIGTERM into a graceful stop (FACADE_GRACEFUL_TIMEOUT_S) and reaps
# its own workers.
FROM ${PYTHON_IMAGE} AS facade

RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin app
COPY --from=facade-build /opt/venv /opt/venv
COPY facade/ /opt/sentiment/facade/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    FACADE_HOST=0.0.0.0 \
    FACADE_PORT=5000 \
    FACADE_TORCHSERVE_URL=http://torchserve:8090

WORKDIR /opt/sentiment
USER 10001:10001
EXPOSE 5000
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:5000/healthz', timeout=2).status != 200)"]
CMD ["python", "-m", "gunicorn", "-c", "facade/gunicorn.conf.py"]

# ------------------------------------------------------------------------------ torchserve build
# CPU-only torch, then the handler's dependencies exactly as tools/requirements.lock pins them
# (hashes checked, --no-deps, then `pip check`), in a venv that the final stage copies.
FROM ${PYTHON_IMAGE} AS torchserve-build

# torch comes from the PyTorch CPU wheel index, or, when the build context's wheels/ holds a torch
# wheel (`make docker-wheels`), from there without any index: the offline path. Plain PyPI is
# never used for torch: it would bring the multi-GB CUDA build. torch is installed alone
# (--no-deps): its own dependencies (sympy, networkx, ...) are in the lock, with hashes.
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# cuda: a GPU build for deploy/kubernetes/overlays/gpu (untested here: no GPU). torch then comes
# with its nvidia-* libraries, unhashed, from TORCH_INDEX_URL (a CUDA index such as
# https://download.pytorch.org/whl/cu126); everything else still from the lock.
# none: no torch at all. Only for CI's linux/arm64 build under emulation, where no aarch64 CPU
# wheel can be had (PyPI's is a CUDA build) and torch could not run anyway; such an image cannot
# serve (the handler imports torch), it proves the rest of the build for that platform.
ARG TORCH_VARIANT=cpu

# pip names each file it fetches and installs (no progress bars: a build log shows them as noise),
# so a long install is never minutes of silence.
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_PROGRESS_BAR=off
RUN python -m venv /opt/venv

COPY wheels/ /tmp/wheels/
RUN set -eux; \
    pip=/opt/venv/bin/pip; \
    case "$TORCH_VARIANT" in cpu|cuda|none) ;; *) echo "error: TORCH_VARIANT=$TORCH_VARIANT (cpu, cuda or none)" >&2; exit 1 ;; esac; \
    if [ "$TORCH_VARIANT" = none ]; then \
        echo "torch: none (TORCH_VARIANT=none: this image cannot serve)"; \
    elif [ "$TORCH_VARIANT" = cuda ]; then \
        echo "torch: CUDA build from $TORCH_INDEX_URL"; \
        "$pip" install --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; \
    # Only a wheel for this build's architecture counts (wheels/ may hold another machine's).
    elif ls /tmp/wheels/torch-"$TORCH_VERSION"*_"$(uname -m)".whl >/dev/null 2>&1; then \
        echo "torch: from the build context's wheels/ (offline)"; \
        "$pip" install --no-index --no-deps --find-links /tmp/wheels "torch==$TORCH_VERSION"; \
    elif [ -n "$TORCH_INDEX_URL" ]; then \
        echo "torch: from $TORCH_INDEX_URL"; \
        "$pip" install --no-deps --index-url "$TORCH_INDEX_URL" "torch==$TORCH_VERSION"; \
    else \
        echo "error: TORCH_INDEX_URL is empty and wheels/ holds no torch-$TORCH_VERSION wheel for $(uname -m);" \
             "run 'make docker-wheels' or set TORCH_INDEX_URL to a CPU wheel index" >&2; \
        exit 1; \
    fi

COPY tools/requirements.lock /tmp/requirements.lock
RUN set -eux; \
    /opt/venv/bin/pip install --require-hashes --no-deps -r /tmp/requirements.lock; \
    # Every requirement of every installed distribution (torch's included) is satisfied; a CUDA
    # build of torch would fail here already, for want of its nvidia-* libraries.
    /opt/venv/bin/pip check; \
    if [ "$TORCH_VARIANT" = cpu ]; then \
        /opt/venv/bin/python -W ignore -c "import sys, torch; sys.exit(None if torch.version.cuda is None else 'refusing a CUDA build of torch (' + torch.__version__ + '): use the CPU wheel index or a CPU wheel in wheels/')"; \
        if /opt/venv/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "error: CUDA libraries got installed" >&2; exit 1; fi; \
    fi; \
    /opt/venv/bin/pip uninstall --quiet --yes pip; \
    site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'); \
    if [ "$TORCH_VARIANT" != none ]; then \
        # What inference never uses: C++ headers and test binaries/libraries shipped in the torch wheel.
        rm -rf "$site"/torch/include "$site"/torch/test "$site"/torch/lib/libtorchbind_test.so \
               "$site"/torch/lib/libaoti_custom_ops.so "$site"/torch/bin/protoc* ; \
        find "$site"/torch/bin -maxdepth 1 -type f ! -name torch_shm_manager -delete; \
        /opt/venv/bin/python -c "import torch; print('torch', torch.__version__)"; \
    fi; \
    /opt/venv/bin/python -c "import transformers, ts, model_archiver; print('transformers', transformers.__version__)"

# ------------------------------------------------------------------------------------ torchserve
# TorchServe (Java 17 frontend + Python workers) serving model-store/sentiment.mar. The same image
# runs the one-shot `model` service (tools/prepare_store.py) that fills the model store volume.
FROM ${PYTHON_IMAGE} AS torchserve

RUN set -eux; \
    apt-get update; \
    # The JRE's postinst expects this dir, which slim images leave out.
    mkdir -p /usr/share/man/man1; \
    # procps: TorchServe's frontend runs `kill` (a binary, not a shell builtin) to stop a worker
    # when workers are scaled down; without it the scale-down answers 500.
    apt-get install -y --no-install-recommends openjdk-17-jre-headless tini procps; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/* /var/log/apt/* /var/log/dpkg.log; \
    groupadd --gid 10001 model-server; \
    useradd --uid 10001 --gid 10001 --create-home --home-dir /home/model-server --shell /usr/sbin/nologin model-server; \
    # Only what TorchServe and the model builder write belongs to the user: the model store
    # (a volume), the Hugging Face cache (a volume), logs and temp files.
    install -d -o 10001 -g 10001 -m 0750 /home/model-server/model-store /home/model-server/logs \
        /home/model-server/tmp /home/model-server/.cache /home/model-server/.cache/huggingface

COPY --from=torchserve-build /opt/venv /opt/venv
# Netty's native epoll transport, without which TorchServe cannot listen on a Unix socket (the
# management API's): Netty would unpack it from TorchServe's jar into /tmp, a noexec tmpfs in every
# deployment, fall back to NIO, and TorchServe would stop with "Invalid configuration". Unpacked
# here instead, for both architectures, and found through java.library.path (JAVA_TOOL_OPTIONS).
RUN set -eux; \
    mkdir /opt/netty-native; \
    /opt/venv/bin/python -c "import glob, pathlib, zipfile; \
jar = zipfile.ZipFile(glob.glob('/opt/venv/lib/python3*/site-packages/ts/frontend/model-server.jar')[0]); \
libs = [n for n in jar.namelist() if n.startswith('META-INF/native/libnetty_transport_native_epoll_')]; \
assert libs, 'no epoll library in the jar'; \
[pathlib.Path('/opt/netty-native', pathlib.Path(n).name).write_bytes(jar.read(n)) for n in libs]"; \
    ls -l /opt/netty-native
COPY config.properties torchserve-metrics.yaml /opt/sentiment/
COPY handler/ /opt/sentiment/handler/
COPY tools/ /opt/sentiment/tools/

# TorchServe reads every config.properties key from TS_<KEY> (enable_envvars_config=true): inside
# the container the inference and metrics APIs listen on all interfaces of the private network;
# the management API only on a Unix socket in a folder of mode 0700 that the container's user owns
# (in the temp dir's tmpfs; `python -m tools.management prepare` makes it before TorchServe starts),
# reached by `docker exec` / `kubectl exec` alone (docs/security.md); gRPC (unused, cannot be
# switched off) stays on loopback as configured.
# JAVA_TOOL_OPTIONS caps TorchServe's Java frontend, so that it fits next to the Python workers
# under the container's memory limit (docker-compose.yml): without it the JVM sizes its heap at a
# quarter of the limit and its direct (Netty) buffers as large again. The frontend only queues
# requests (at most job_queue_size=256 bodies of <= 1 MiB) and moves small JSON; it measured
# ~200 MB RSS. On an OutOfMemoryError it exits rather than limping on, TorchServe's launcher and
# tini with it, and Compose's `restart: unless-stopped` starts the container again. (TorchServe's
# own `vmargs` key lives in config.properties, which the native stack shares.)
# PYTHONPATH: the tools run as `python -m tools.<name>` (health check, model store, scaling) from
# any working directory.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONPATH=/opt/sentiment \
    TS_INFERENCE_ADDRESS=http://0.0.0.0:8090 \
    TS_MANAGEMENT_ADDRESS=unix:/home/model-server/tmp/management/management.sock \
    TS_METRICS_ADDRESS=http://0.0.0.0:8092 \
    TS_GRPC_INFERENCE_ADDRESS=127.0.0.1 \
    TS_GRPC_MANAGEMENT_ADDRESS=127.0.0.1 \
    TS_METRICS_CONFIG=/opt/sentiment/torchserve-metrics.yaml \
    LOG_LOCATION=/home/model-server/logs \
    METRICS_LOCATION=/home/model-server/logs \
    TEMP=/home/model-server/tmp \
    TMPDIR=/home/model-server/tmp \
    HF_HOME=/home/model-server/.cache/huggingface \
    MODEL_STORE=/home/model-server/model-store \
    JAVA_TOOL_OPTIONS="-Xmx512m -XX:MaxDirectMemorySize=256m -XX:+ExitOnOutOfMemoryError -Djava.library.path=/opt/netty-native"

WORKDIR /home/model-server
USER 10001:10001
EXPOSE 8090 8092
# Healthy = the model has a READY worker (loading it takes a while on a cold start).
HEALTHCHECK --interval=5s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "-m", "tools.healthcheck"]
# tini -g: PID 1 forwards SIGTERM to the whole process group (TorchServe's Python launcher, which
# does not forward signals itself, the Java frontend and its Python workers) and reaps zombies.
# -e 143: a stop by SIGTERM is a clean exit (status 0), not an error.
ENTRYPOINT ["tini", "-g", "-e", "143", "--"]
# The shell only runs the socket's preparation first, then becomes TorchServe's launcher.
CMD ["sh", "-c", "python -m tools.management prepare && exec torchserve --start --foreground --ncs --ts-config /opt/sentiment/config.properties --model-store /home/model-server/model-store"]
