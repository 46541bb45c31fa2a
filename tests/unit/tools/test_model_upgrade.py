"""The upgrade tool's decisions (tools/model_upgrade.py): waiting, replicas, the store's record.

What needs TorchServe (registering, the check, the switch and its refusal) runs against a real one in
tests/integration/test_model_upgrade.py.
"""

import json
import zipfile

import pytest

from tools.model_upgrade import (
    Replica,
    Store,
    UpgradeError,
    common_default,
    main,
    read_state,
    ready,
    record_switch,
    refused_archive,
    replicas,
    stored_archive,
    wait_ready,
)

from sentiment_info import BUILD_INFO


class Clock:
    """A clock that moves only when the code sleeps."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def workers(*states):
    return {"workers": [{"id": str(9000 + i), "status": state} for i, state in enumerate(states)]}


def test_a_version_is_ready_when_every_wanted_worker_is_ready():
    assert ready(workers("READY", "READY"), 2)
    assert not ready(workers("READY", "UNLOADING"), 2)
    assert not ready(workers("READY"), 2)
    assert not ready(workers(), 1)


def test_waiting_ends_as_soon_as_the_workers_are_ready():
    clock, answers = Clock(), iter([workers("UNLOADING"), workers("UNLOADING"), workers("READY")])
    assert wait_ready(lambda: next(answers), 1, 60, clock, clock.sleep) == workers("READY")
    assert clock.now == 1.0


def test_waiting_times_out_naming_the_states_it_saw():
    clock = Clock()
    with pytest.raises(UpgradeError, match=r"not 1 READY workers within 30 s \(--timeout\): \['UNLOADING'\]"):
        wait_ready(lambda: workers("UNLOADING"), 1, 30, clock, clock.sleep)
    assert 30 <= clock.now <= 30.5


def test_a_host_name_stands_for_every_replica_it_resolves_to():
    addresses = {"torchserve": ["10.0.0.7", "10.0.0.9"], "127.0.0.1": ["127.0.0.1"]}.get
    found = replicas(
        ["http://torchserve:8091", "http://127.0.0.1:8091"],
        ["http://torchserve:8090", "http://127.0.0.1:8090"],
        addresses,
    )
    assert found == [
        Replica("http://10.0.0.7:8091", "http://10.0.0.7:8090"),
        Replica("http://10.0.0.9:8091", "http://10.0.0.9:8090"),
        Replica("http://127.0.0.1:8091", "http://127.0.0.1:8090"),
    ]


def test_a_socket_address_is_one_replica_paired_with_its_inference_url_as_given():
    socket_address = "unix:/home/model-server/tmp/management/management.sock"

    assert replicas([socket_address], ["http://127.0.0.1:8090"], addresses=lambda host: 1 / 0) == [
        Replica(socket_address, "http://127.0.0.1:8090")
    ]


@pytest.mark.parametrize(
    ("management", "inference", "message"),
    [
        (["http://a:8091", "http://b:8091"], ["http://a:8090"], "one --inference-url per --management-url"),
        (["http://a:8091"], ["http://b:8090"], "different hosts"),
    ],
)
def test_replica_urls_must_pair_up(management, inference, message):
    with pytest.raises(UpgradeError, match=message):
        replicas(management, inference, lambda host: [host])


def test_replicas_with_different_defaults_stop_the_switch():
    assert common_default({"a": "v1", "b": "v1"}) == "v1"
    with pytest.raises(UpgradeError, match="different default versions"):
        common_default({"a": "v1", "b": "v2"})


def archive(path, version):
    """Write a stand-in .mar that carries build_mar's build info; return its path."""
    with zipfile.ZipFile(path, "w") as mar:
        mar.writestr(BUILD_INFO, json.dumps({"archive_version": version}))
    return path


def test_a_given_archive_is_kept_in_the_store_under_its_version(tmp_path):
    store = Store(tmp_path / "store", "sentiment")
    store.path.mkdir()
    assert stored_archive(store, archive(tmp_path / "new.mar", "bbb")) == ("bbb", "sentiment-bbb.mar")
    assert (store.path / "sentiment-bbb.mar").read_bytes() == (tmp_path / "new.mar").read_bytes()


def test_an_archive_without_a_version_is_refused(tmp_path):
    store = Store(tmp_path, "sentiment")
    with zipfile.ZipFile(tmp_path / "foreign.mar", "w") as mar:
        mar.writestr("MAR-INF/MANIFEST.json", "{}")
    with pytest.raises(UpgradeError, match=r"no build-info\.json"):
        stored_archive(store, tmp_path / "foreign.mar")


def test_a_switch_makes_the_new_archive_what_a_restart_loads_and_keeps_the_old_one(tmp_path):
    store = Store(tmp_path, "sentiment")
    archive(store.default_archive, "aaa")  # what `make mar` wrote
    archive(tmp_path / "sentiment-bbb.mar", "bbb")

    assert record_switch(store, "bbb", "aaa") == {"default": "bbb", "previous": "aaa"}
    assert zipfile.ZipFile(store.default_archive).read(BUILD_INFO) == b'{"archive_version": "bbb"}'
    assert (tmp_path / "sentiment-aaa.mar").is_file()
    assert read_state(store) == {"default": "bbb", "previous": "aaa"}


def test_the_store_keeps_only_the_default_and_the_previous_archive(tmp_path):
    store = Store(tmp_path, "sentiment")
    for version in ("aaa", "bbb"):
        archive(tmp_path / f"sentiment-{version}.mar", version)
    record_switch(store, "bbb", "aaa")
    archive(tmp_path / "sentiment-ccc.mar", "ccc")  # the next upgrade's candidate
    record_switch(store, "ccc", "bbb")
    assert sorted(path.name for path in tmp_path.glob("sentiment*.mar")) == [
        "sentiment-bbb.mar",
        "sentiment-ccc.mar",
        "sentiment.mar",
    ]
    # A rollback is a switch back: the two swap places.
    assert record_switch(store, "bbb", "ccc") == {"default": "bbb", "previous": "ccc"}


def test_a_refused_candidate_leaves_the_store_but_a_refused_rollback_target_stays(tmp_path):
    store = Store(tmp_path, "sentiment")
    for version in ("aaa", "bbb", "ccc"):
        archive(tmp_path / f"sentiment-{version}.mar", version)
    record_switch(store, "bbb", "aaa")

    refused_archive(store, "ccc")  # an upgrade's candidate
    refused_archive(store, "aaa")  # the previous version, a rollback's target: kept for the next try

    assert sorted(path.name for path in tmp_path.glob("sentiment-*.mar")) == ["sentiment-aaa.mar", "sentiment-bbb.mar"]


@pytest.mark.parametrize("arguments", [["check"], ["record", "aaa"], ["promote", "aaa", "bbb"]])
def test_a_step_with_the_wrong_number_of_versions_is_refused_before_anything_runs(arguments, tmp_path, capsys):
    management = ["--management-url", f"unix:{tmp_path}/absent.sock", "--store", str(tmp_path)]
    with pytest.raises(SystemExit) as stopped:
        main([*arguments, *management], environ={})
    assert stopped.value.code == 2
    assert f"{arguments[0]} takes" in capsys.readouterr().err
