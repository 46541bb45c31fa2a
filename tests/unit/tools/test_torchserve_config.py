"""config.properties is the one home of TorchServe's ports and model name; the rest read it."""

from stack.launcher import StackSettings
from tools.management import default_address as default_management_url
from tools.scale_workers import default_model_name
from tools.torchserve_config import CONFIG_FILE, local_url, management_address, model_name, properties


def test_the_launcher_serves_the_ports_and_model_that_config_properties_names():
    config = properties()
    torchserve = StackSettings.from_env({}).torchserve
    assert torchserve.config_file == CONFIG_FILE
    assert torchserve.inference_url == local_url(config, "inference_address")
    assert torchserve.management_url == management_address(config)  # the socket in the default run dir
    assert torchserve.metrics_url == local_url(config, "metrics_address")
    assert (torchserve.grpc_inference_port, torchserve.grpc_management_port) == (
        int(config["grpc_inference_port"]),
        int(config["grpc_management_port"]),
    )
    assert f"{torchserve.model_name}.mar" == config["load_models"] == f"{model_name(config)}.mar"


def test_the_management_api_is_a_unix_socket_by_default_and_a_relative_one_is_the_project_dirs():
    assert properties()["management_address"].startswith("unix:")
    assert default_management_url({}) == f"unix:{CONFIG_FILE.parent}/run/management/management.sock"
    environ = {"TS_MANAGEMENT_ADDRESS": "unix:/home/model-server/tmp/management/management.sock"}
    assert default_management_url(environ) == environ["TS_MANAGEMENT_ADDRESS"]


def test_a_ts_variable_overrides_its_key_as_in_torchserve_and_a_wildcard_bind_is_reached_on_loopback():
    environ = {"TS_MANAGEMENT_ADDRESS": "http://0.0.0.0:9191"}
    assert properties(environ=environ)["management_address"] == "http://0.0.0.0:9191"
    assert default_management_url(environ) == "http://127.0.0.1:9191"
    assert default_management_url({"TORCHSERVE_MANAGEMENT_URL": "http://ts:1/"}) == "http://ts:1/"
    assert default_model_name({}) == model_name(properties())
    assert default_model_name({"MODEL_NAME": "other"}) == "other"


def test_comments_and_blank_lines_are_not_keys(tmp_path):
    path = tmp_path / "config.properties"
    path.write_text("# a=1\n\nload_models = m.mar\nallowed_urls=file://.*\\\\.mar\n")
    assert properties(path) == {"load_models": "m.mar", "allowed_urls": "file://.*\\\\.mar"}
