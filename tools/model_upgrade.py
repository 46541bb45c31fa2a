"""Upgrade the served model through TorchServe's management API, with a check and a way back.

  python -m tools.model_upgrade upgrade [--archive FILE]   # else builds from MODEL_DIR (tools/build_mar.py)
  python -m tools.model_upgrade rollback                   # back to the version the last switch replaced
  python -m tools.model_upgrade status

Where one process cannot both write the store and reach every management API (Compose: the API
is a Unix socket inside each TorchServe container, the store read-only there), the same switch
runs in steps (deploy/switch-model.sh runs them):
  stage {upgrade|rollback}   in a container that writes the store: print the version to switch to
  check VERSION              in each TorchServe container: register, warm and check it there;
                             print the current default (on a failure: withdrawn there, exit 1)
  promote VERSION            in each: make it the default
  record VERSION OLD         in the store's container: make it what a restart loads; keep OLD
  retire VERSION             in each, after --drain-s: unregister it (also withdraws a candidate)
  discard VERSION            in the store's container: delete a refused candidate's archive

A switch to a version, on every replica (each --management-url, with its --inference-url; a host
name stands for every address it resolves to, so `torchserve` on a Docker network means each
TorchServe container):
1. the archive lies in the model store as <model>-<version>.mar (the version is build_mar's hash);
2. it is registered beside the default version by that file name (never a URL), with as many
   workers as the default has, and the tool waits until they are READY (warmed up);
3. the check (tools/model_check.py) sends the same texts to both versions by version;
4. on a failure or a timeout on any replica the new version is unregistered everywhere, the old one
   stays the default, and the tool exits 1 with the figures;
5. otherwise it becomes the default everywhere, the store's <model>.mar (what a restarting
   TorchServe loads) becomes a copy of it, and after --drain-s (longer than the facade's read
   timeout: every request begun on the old version has finished) the old version is unregistered.
The store keeps the archives of the default and of the previous version, and <model>.versions.json
names both: `rollback` switches to the previous one the same way (its check only proves that the
version answers, unless thresholds are given).
"""

import argparse
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from tools import management, model_check
from tools.build_mar import BuildError, BuildSettings, archived_build_info, build
from tools.model_check import CheckError, Thresholds
from tools.scale_workers import default_model_name
from tools.torchserve_config import local_url, properties

# Texts per check request: the handler serves up to batch_size requests at once, each of many texts.
CHECK_CHUNK = 32
# The steps of a switch run one at a time (the module docstring), and how many versions each takes.
STEPS = {"stage": 0, "check": 1, "promote": 1, "record": 2, "retire": 1, "discard": 1}
# No check at all on a rollback by default: only that the version answers.
NO_THRESHOLDS = Thresholds(min_accuracy=None, max_accuracy_drop=None, min_agreement=None)


class UpgradeError(RuntimeError):
    """The switch cannot go on; the message says why and what to change."""


@dataclass(frozen=True)
class Replica:
    """One TorchServe: its management and inference base URLs."""

    management_url: str
    inference_url: str


@dataclass(frozen=True)
class Store:
    """The model store's files for one model."""

    path: Path
    model: str

    @property
    def default_archive(self):
        """Return the archive a starting TorchServe loads (config.properties' load_models)."""
        return self.path / f"{self.model}.mar"

    def archive_name(self, version):
        """Return the file name the store keeps `version` under (what registration names)."""
        return f"{self.model}-{version}.mar"

    @property
    def state_file(self):
        """Return the file naming the default and the previous version."""
        return self.path / f"{self.model}.versions.json"


# ----------------------------------------------------------------------------------- decisions


def with_host(url, host):
    """Return `url` with its host replaced (the port kept)."""
    parts = urlsplit(url)
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def replicas(management_urls, inference_urls, addresses=None):
    """Return one Replica per address each management URL's host resolves to, paired by position."""
    if len(management_urls) != len(inference_urls):
        raise UpgradeError("give one --inference-url per --management-url (same order)")
    addresses = addresses or resolved_addresses
    found = []
    for management_url, inference_url in zip(management_urls, inference_urls, strict=True):
        if management.socket_path(management_url) is not None:
            # A socket is one TorchServe's, on this machine or in this container.
            found.append(Replica(management_url, inference_url))
            continue
        host = urlsplit(management_url).hostname
        if host != urlsplit(inference_url).hostname:
            raise UpgradeError(f"{management_url} and {inference_url} name different hosts: pair each replica's URLs")
        for address in addresses(host):
            replica = Replica(with_host(management_url, address), with_host(inference_url, address))
            if replica not in found:
                found.append(replica)
    return found


def resolved_addresses(host):
    """Return every IPv4 address of `host`, sorted (Docker's DNS answers one per container)."""
    infos = socket.getaddrinfo(host, None, family=socket.AF_INET, type=socket.SOCK_STREAM)
    return sorted({info[4][0] for info in infos})


def ready(description, workers):
    """Return whether a version's description shows `workers` workers, all READY."""
    states = [worker.get("status") for worker in description.get("workers", [])]
    return len(states) >= workers and all(state == "READY" for state in states)


def common_default(defaults):
    """Return the one default version of every replica; raise if the replicas disagree."""
    versions = sorted(set(defaults.values()))
    if len(versions) != 1:
        raise UpgradeError(
            f"the replicas serve different default versions {defaults} (a switch was interrupted): make one "
            "the default everywhere (PUT /models/<model>/<version>/set-default on each), then run this again"
        )
    return versions[0]


def next_state(state, new_default, old_default):
    """Return the store's record after switching from `old_default` to `new_default`."""
    return {**state, "default": new_default, "previous": old_default}


def kept_versions(state):
    """Return the versions whose archives the store keeps."""
    return {version for version in (state.get("default"), state.get("previous")) if version}


# ------------------------------------------------------------------------------ management API


def _checked(response, what):
    if response.status_code >= 300:
        raise UpgradeError(f"{what} answered {response.status_code}: {response.text.strip()[:300]}")
    return response


def _management(replica, method, path, **kwargs):
    """Return the management API's answer to one request (its Unix socket or URL: tools/management.py)."""
    return management.request(replica.management_url, method, path, **kwargs)


def _version_path(model, version):
    return f"/models/{model}/{quote(version, safe='')}"


def registered(replica, model):
    """Return the descriptions of every registered version of `model` ([] when none is)."""
    response = _management(replica, "GET", f"/models/{model}/all", timeout=10)
    if response.status_code == 404:
        return []
    return _checked(response, f"GET {replica.management_url} /models/{model}/all").json()


def default_description(replica, model):
    """Return the description of the default version (GET /models/<model> describes only it)."""
    response = _management(replica, "GET", f"/models/{model}", timeout=10)
    return _checked(response, f"GET {replica.management_url} /models/{model}").json()[0]


def version_description(replica, model, version):
    """Return the description of one version."""
    path = _version_path(model, version)
    return _checked(_management(replica, "GET", path, timeout=10), f"GET {replica.management_url} {path}").json()[0]


def register(replica, archive_name, workers):
    """Register the store's `archive_name` (a file name, never a URL); its `workers` workers start in the background."""
    # Asynchronous: a synchronous registration holds one of TorchServe's network threads until the
    # workers are up, and every connection on that thread (inference too) waits as long.
    params = {"url": archive_name, "initial_workers": workers, "synchronous": "false"}
    response = _management(replica, "POST", "/models", params=params, timeout=120)
    _checked(response, f"POST {replica.management_url} /models?url={archive_name}")


def set_default(replica, model, version):
    """Make `version` the one /predictions/<model> reaches."""
    path = f"{_version_path(model, version)}/set-default"
    _checked(_management(replica, "PUT", path, timeout=30), f"PUT {replica.management_url} {path}")


def unregister(replica, model, version):
    """Unregister one version (TorchServe refuses the default one)."""
    path = _version_path(model, version)
    _checked(_management(replica, "DELETE", path, timeout=120), f"DELETE {replica.management_url} {path}")


def retire(replica, model, version, timeout_s=120.0):
    """Stop the workers of a version in the background, wait until none is left, then unregister it."""
    # An unregistration stops the workers itself, holding one of TorchServe's network threads (and
    # every connection on it) meanwhile; with none left it returns at once.
    path = _version_path(model, version)
    params = {"min_worker": 0, "max_worker": 0, "synchronous": "false"}
    _checked(_management(replica, "PUT", path, params=params, timeout=30), f"PUT {replica.management_url} {path}")
    deadline = time.monotonic() + timeout_s
    while version_description(replica, model, version).get("workers") and time.monotonic() < deadline:
        time.sleep(0.5)
    unregister(replica, model, version)


def wait_ready(describe, workers, timeout_s, clock=time.monotonic, sleep=time.sleep):
    """Poll describe() until `workers` workers are READY; raise UpgradeError at the timeout."""
    deadline = clock() + timeout_s
    while True:
        description = describe()
        if ready(description, workers):
            return description
        if clock() >= deadline:
            states = [worker.get("status") for worker in description.get("workers", [])]
            raise UpgradeError(f"not {workers} READY workers within {timeout_s:.0f} s (--timeout): {states}")
        sleep(0.5)


def version_labels(replica, model, version, texts, deadline):
    """Return the labels `version` gives `texts`, asked by version on one replica."""
    url = f"{replica.inference_url}/predictions/{model}/{quote(version, safe='')}"
    labels = []
    for start in range(0, len(texts), CHECK_CHUNK):
        chunk = texts[start : start + CHECK_CHUNK]
        left_s = deadline - time.monotonic()
        if left_s <= 0:
            raise CheckError("the check ran out of time (--timeout)")
        try:
            response = requests.post(url, json={"texts": chunk}, timeout=left_s)
        except requests.RequestException as exc:
            raise CheckError(f"{url}: {exc}") from exc
        if response.status_code != 200:
            raise CheckError(f"{url} answered {response.status_code}: {response.text.strip()[:200]}")
        labels += model_check.answer_labels(response.json(), len(chunk))
    return labels


# -------------------------------------------------------------------------------- model store


def archive_version(path):
    """Return the version build_mar recorded in an archive; raise if it holds none."""
    version = archived_build_info(path).get("archive_version")
    if not version:
        raise UpgradeError(f"{path} holds no build-info.json with an archive_version: build it with `make mar`")
    return version


def placed(source, target):
    """Put a copy of `source` at `target` atomically (a hard link where the file system allows)."""
    fd, temp_name = tempfile.mkstemp(prefix=".place-", suffix=".mar", dir=target.parent)
    os.close(fd)
    os.unlink(temp_name)
    try:
        try:
            os.link(source, temp_name)
        except OSError:
            shutil.copyfile(source, temp_name)
        os.replace(temp_name, target)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return target


def stored_archive(store, archive=None, environ=os.environ):
    """Return (version, file name) of the candidate in the store: `archive` copied in, else built from MODEL_DIR."""
    if archive is None:
        staging = Path(tempfile.mkdtemp(prefix=".upgrade-", dir=store.path))
        try:
            settings = BuildSettings.from_env({**environ, "MODEL_STORE": str(staging), "MODEL_NAME": store.model})
            if settings.model_dir is None:
                raise UpgradeError("give MODEL_DIR=<a Hugging Face model dir> or --archive FILE")
            version = archive_version(build(settings))
            placed(settings.archive_path, store.path / store.archive_name(version))
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return version, store.archive_name(version)
    version = archive_version(archive)
    target = store.path / store.archive_name(version)
    if not target.is_file():
        placed(archive, target)
    return version, store.archive_name(version)


def read_state(store):
    """Return the store's record of the default and previous versions ({} before the first switch)."""
    try:
        return json.loads(store.state_file.read_text())
    except (OSError, ValueError):
        return {}


def record_switch(store, new_version, old_version):
    """Make the new version the store's default (what a restart loads) and record both versions."""
    old_file = store.path / store.archive_name(old_version)
    # Before the first switch the old version lives only in <model>.mar (what `make mar` wrote).
    if not old_file.is_file() and archived_build_info(store.default_archive).get("archive_version") == old_version:
        placed(store.default_archive, old_file)
    placed(store.path / store.archive_name(new_version), store.default_archive)
    state = next_state(read_state(store), new_version, old_version)
    fd, temp_name = tempfile.mkstemp(prefix=".state-", dir=store.path)
    with os.fdopen(fd, "w") as stream:
        json.dump(state, stream, indent=2)
    os.replace(temp_name, store.state_file)
    for path in store.path.glob(f"{store.model}-*.mar"):
        if path.name not in {store.archive_name(version) for version in kept_versions(state)}:
            path.unlink()
    return state


# ----------------------------------------------------------------------------------- the switch


@dataclass(frozen=True)
class Plan:
    """One switch: where, to what, checked how."""

    replicas: list
    store: Store
    version: str
    archive_name: str
    thresholds: Thresholds
    labelled: list
    timeout_s: float
    drain_s: float


def say(message):
    """Print a progress line with the time since the start."""
    print(f"[{time.monotonic() - START:6.1f} s] {message}", flush=True)


START = time.monotonic()


def checked_figures(plan, replica, current):
    """Register, warm and check the candidate on one replica; return its figures."""
    model = plan.store.model
    deadline = time.monotonic() + plan.timeout_s
    workers = max(1, default_description(replica, model).get("minWorkers", 1))
    say(f"{replica.management_url}: registering {plan.archive_name} with {workers} worker(s)")
    register(replica, plan.archive_name, workers)
    wait_ready(
        lambda: version_description(replica, model, plan.version), workers, max(1.0, deadline - time.monotonic())
    )
    say(f"{replica.management_url}: {plan.version} READY; checking {len(plan.labelled)} texts")
    texts = [text for text, _ in plan.labelled]
    candidate = version_labels(replica, model, plan.version, texts, deadline)
    answered = version_labels(replica, model, current, texts, deadline)
    return model_check.figures(candidate, answered, [label for _, label in plan.labelled])


def check_failures(plan, current):
    """Register, warm and check the candidate on each replica in turn (after removing what an
    interrupted run left), up to the first that cannot be checked; return the replicas it was
    registered on and what failed."""
    model = plan.store.model
    for replica in plan.replicas:
        if plan.version in {d["modelVersion"] for d in registered(replica, model)}:
            unregister(replica, model, plan.version)  # left by an interrupted run: start clean
    registered_on, failures = [], []
    for replica in plan.replicas:
        registered_on.append(replica)
        try:
            measured = checked_figures(plan, replica, current)
        except (UpgradeError, CheckError, requests.RequestException) as exc:
            failures.append(f"{replica.management_url}: {exc}")
            break
        say(f"{replica.management_url}: {measured.summary(plan.version, current)}")
        failures += [f"{replica.management_url}: {p}" for p in model_check.problems(measured, plan.thresholds)]
    return registered_on, failures


def withdraw(plan, replicas_done):
    """Unregister the candidate wherever it was registered (it is not the default there)."""
    for replica in replicas_done:
        try:
            retire(replica, plan.store.model, plan.version)
        except (UpgradeError, requests.RequestException) as exc:
            print(f"warning: {replica.management_url}: could not unregister {plan.version}: {exc}", file=sys.stderr)


def switch(plan):
    """Switch every replica to plan.version if its check passes; return the exit status."""
    model = plan.store.model
    current = common_default({r.management_url: default_description(r, model)["modelVersion"] for r in plan.replicas})
    if current == plan.version:
        say(f"{plan.version} is already the default on every replica: nothing to do")
        return 0
    registered_on, failures = check_failures(plan, current)
    if failures:
        withdraw(plan, registered_on)
        for failure in failures:
            print(f"check failed: {failure}", file=sys.stderr)
        print(f"{current} stays the default; {plan.version} was unregistered.", file=sys.stderr)
        refused_archive(plan.store, plan.version)
        return 1
    for replica in plan.replicas:
        set_default(replica, model, plan.version)
    say(f"{plan.version} is the default on {len(plan.replicas)} replica(s)")
    record_switch(plan.store, plan.version, current)
    say(f"draining {current} for {plan.drain_s:.0f} s (--drain-s)")
    time.sleep(plan.drain_s)
    for replica in plan.replicas:
        retire(replica, model, current)
    say(f"{current} unregistered; {plan.version} serves, {current} is kept for `rollback`")
    return 0


def refused_archive(store, version):
    """Delete a refused candidate's archive from the store, unless the record keeps it (a rollback's)."""
    if version not in kept_versions(read_state(store)):
        (store.path / store.archive_name(version)).unlink(missing_ok=True)


def checked_here(plan):
    """Step `check`: the candidate registered, warm and checked on plan.replicas; print the current default."""
    model = plan.store.model
    current = common_default({r.management_url: default_description(r, model)["modelVersion"] for r in plan.replicas})
    failures = check_failures(plan, current)[1] if current != plan.version else []
    if failures:
        withdraw(plan, plan.replicas)
        for failure in failures:
            print(f"check failed: {failure}", file=sys.stderr)
        return 1
    print(current)
    return 0


def step(args, targets, store, plan_of):
    """Run one step of a switch (the module docstring); return the exit status."""
    model = args.model
    if args.command == "stage":
        print(plan_of(args.step_for).version)
    elif args.command == "check":
        return checked_here(plan_of(args.step_for, args.versions[0]))
    elif args.command == "promote":
        for replica in targets:
            set_default(replica, model, args.versions[0])
    elif args.command == "record":
        record_switch(store, *args.versions[:2])
    elif args.command == "retire":
        time.sleep(args.drain_s)
        for replica in targets:
            if args.versions[0] in {d["modelVersion"] for d in registered(replica, model)}:
                retire(replica, model, args.versions[0])
    elif args.command == "discard":
        refused_archive(store, args.versions[0])
    return 0


def status(replicas_, model):
    """Print every replica's registered versions and workers; return 0."""
    for replica in replicas_:
        default = default_description(replica, model)["modelVersion"]
        for description in registered(replica, model):
            version = description["modelVersion"]
            states = [worker["status"] for worker in description.get("workers", [])]
            mark = "default" if version == default else ""
            print(f"{replica.management_url} {version} {mark:<7} {states}")
    return 0


# ------------------------------------------------------------------------------- command line


def parse_args(argv, environ):
    """Return the command-line arguments."""
    values = properties(environ=environ)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("upgrade", "rollback", "status", *STEPS))
    parser.add_argument("versions", nargs="*", help="a step's versions (the module docstring)")
    parser.add_argument("--for", dest="step_for", choices=("upgrade", "rollback"), default="upgrade")
    parser.add_argument("--archive", type=Path, help="a built .mar (default: build from MODEL_DIR)")
    parser.add_argument("--management-url", action="append", help="a TorchServe's management API (repeatable)")
    parser.add_argument("--inference-url", action="append", help="its inference API, in the same order")
    parser.add_argument("--model", default=default_model_name(environ))
    parser.add_argument("--store", type=Path, default=Path(environ.get("MODEL_STORE") or values["model_store"]))
    parser.add_argument("--labelled", type=Path, help="a TSV with columns sentence, label (SST-2 dev)")
    parser.add_argument("--sample", type=int, default=200, help="rows of --labelled to check (random, --seed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-accuracy", type=float, default=None)
    parser.add_argument("--max-accuracy-drop", type=float, default=Thresholds.max_accuracy_drop)
    parser.add_argument("--min-agreement", type=float, default=Thresholds.min_agreement)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds for each replica to load and check")
    parser.add_argument(
        "--drain-s", type=float, default=20.0, help="wait before unregistering the old version (> facade read timeout)"
    )
    args = parser.parse_args(argv)
    args.management_url = args.management_url or [management.default_address(environ)]
    inference_url = environ.get("TORCHSERVE_INFERENCE_URL") or local_url(values, "inference_address")
    args.inference_url = args.inference_url or [inference_url]
    return args, parser


def plan_for(args, parser, store, targets, command=None, version=None):
    """Return the Plan of an upgrade or a rollback (`command`, else args.command) from the arguments:
    to `version` when given (staged before), else to the archive staged now or the previous version."""
    command = command or args.command
    bounds = ("min_accuracy", "max_accuracy_drop", "min_agreement")
    explicit = any(getattr(args, name) != parser.get_default(name) for name in bounds)
    thresholds = Thresholds(args.min_accuracy, args.max_accuracy_drop, args.min_agreement)
    if command == "rollback" and not explicit:
        thresholds = NO_THRESHOLDS
    if version is not None:
        archive_name = store.archive_name(version)
    elif command == "upgrade":
        version, archive_name = stored_archive(store, args.archive)
    else:
        previous = read_state(store).get("previous")
        if not previous or not (store.path / store.archive_name(previous)).is_file():
            raise UpgradeError(f"no previous version recorded in {store.state_file}: nothing to roll back to")
        version, archive_name = previous, store.archive_name(previous)
    return Plan(
        replicas=targets,
        store=store,
        version=version,
        archive_name=archive_name,
        thresholds=thresholds,
        labelled=model_check.labelled_texts(args.labelled, args.sample, args.seed),
        timeout_s=args.timeout,
        drain_s=args.drain_s,
    )


def main(argv=None, environ=os.environ):
    """Run the command; exit 1 when the switch failed or was refused, with the reason."""
    args, parser = parse_args(argv, environ)
    try:
        targets = replicas([u.rstrip("/") for u in args.management_url], [u.rstrip("/") for u in args.inference_url])
        if args.command == "status":
            return status(targets, args.model)
        store = Store(args.store.resolve(), args.model)
        if args.command in STEPS:
            if len(args.versions) != STEPS[args.command]:
                parser.error(f"{args.command} takes {STEPS[args.command]} version(s)")
            return step(args, targets, store, lambda *how: plan_for(args, parser, store, targets, *how))
        return switch(plan_for(args, parser, store, targets))
    except (UpgradeError, BuildError, CheckError, requests.RequestException, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
