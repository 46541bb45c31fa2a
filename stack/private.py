"""A private native stack on free loopback ports: the one factory of the tests and the benchmarks.

Each instance gets its own ports, model store, run and log folders under a work dir, so that it
never meets `make up`'s stack nor another instance.
"""

import socket

from stack.launcher import StackSettings
from stack.processes import StartupError
from stack.torchserve import TorchServeSettings
from tools.build_mar import BuildError, BuildSettings, build


def free_port():
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def free_port_pair():
    """Return a port p such that p and p + 1 are both free on loopback (two facades)."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise StartupError("no two consecutive free ports found")


def private_torchserve(work_dir, model_store=None):
    """Return settings for a TorchServe of its own under `work_dir` (store: work_dir/model-store)."""
    return TorchServeSettings(
        inference_port=free_port(),
        metrics_port=free_port(),
        grpc_inference_port=free_port(),
        grpc_management_port=free_port(),
        model_store=model_store or work_dir / "model-store",
        run_dir=work_dir / "run",
        log_dir=work_dir / "logs",
    )


def private_stack(work_dir, model_store=None):
    """Return settings for a whole stack of its own (two facades) under `work_dir`."""
    torchserve = private_torchserve(work_dir, model_store)  # the stack shares its run and log folders
    return StackSettings(
        http_port=free_port(),
        replicas=2,
        facade_base_port=free_port_pair(),
        torchserve=torchserve,
        run_dir=torchserve.run_dir,
        log_dir=torchserve.log_dir,
    )


def build_archive(model_dir, model_store, **build_env):
    """Build the project's .mar of `model_dir` into `model_store`; return its path.

    build_env: more of tools/build_mar.py's variables (RUNTIME, PRECISION, ...).
    """
    return build(BuildSettings.from_env({"MODEL_DIR": str(model_dir), "MODEL_STORE": str(model_store), **build_env}))


def serving_store(work_dir, model_dir=None, mar=None):
    """Return (a model store under `work_dir` serving `mar` or the archive of `model_dir`, what it serves)."""
    store = work_dir / "model-store"
    if mar:
        if not mar.is_file():
            raise StartupError(f"--mar {mar} is not a file")
        store.mkdir(parents=True, exist_ok=True)
        (store / f"{TorchServeSettings.model_name}.mar").symlink_to(mar.resolve())
        return store, f"archive {mar}"
    try:
        build_archive(model_dir, store)
    except BuildError as exc:
        raise StartupError(str(exc)) from exc
    return store, f"model dir {model_dir}"
