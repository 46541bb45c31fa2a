"""Facts two runtimes hold each in their own copy, because neither can import the other, must agree.

The facade never imports the handler's modules, the Docker engine cannot read Python, and nginx
reads only its template: where each keeps its own copy, these tests keep the copies equal.
"""

import re

import pytest

from facade.info import DESCRIBE_HEADER
from facade.settings import Settings
from facade.tokens import too_many_tokens_message
from stack.launcher import (
    NGINX_DIR,
    StackSettings,
    facade_env,
    nginx_config,
    nginx_defaults,
    nginx_settings,
    proxy_read_timeout,
)
from stack.torchserve import TorchServeSettings
from tests.unit.test_docker_files import env_defaults
from tools.torchserve_config import model_name, properties

from sentiment_info import DESCRIBE_HEADER as HANDLER_DESCRIBE_HEADER
from sentiment_requests import TooManyTokensError


@pytest.mark.parametrize(("tokens", "limit", "max_text_tokens"), [(2049, 2048, 512), (5000, 2048, 512), (9, 8, 8)])
def test_the_facade_words_a_too_many_tokens_refusal_as_the_handler_does(tokens, limit, max_text_tokens):
    handler_error = TooManyTokensError(tokens, limit, max_text_tokens)
    assert too_many_tokens_message(tokens, limit, max_text_tokens) == handler_error.message


def test_the_facades_default_model_is_the_one_torchserve_loads():
    assert Settings().model_name == model_name(properties())


def test_the_launcher_tells_every_facade_which_model_torchserve_serves():
    settings = StackSettings(torchserve=TorchServeSettings(model_name="reviews-v2"))
    environ = facade_env(settings, 5001, base_env={})
    assert Settings.from_env(environ).model_name == "reviews-v2"


def test_the_launcher_takes_nginx_tunables_from_the_environment_else_from_the_defaults_file():
    settings = nginx_settings({"NGINX_LIMIT_CONN": "on", "NGINX_LIMIT_REQ": ""})
    assert settings == {**nginx_defaults(), "NGINX_LIMIT_CONN": "on"}


def test_nginx_waits_for_a_facade_longer_than_the_facade_waits_for_torchserve():
    for facade in (Settings(), Settings(read_timeout_s=60.0), Settings(read_timeout_s=1.0, connect_timeout_s=3.0)):
        seconds = int(proxy_read_timeout(facade).removesuffix("s"))
        assert seconds > 2 * facade.connect_timeout_s + facade.read_timeout_s


def test_nginx_never_retries_a_request_whose_answer_timed_out():
    template = (NGINX_DIR / "nginx.conf.template").read_text()
    [retry_window_ms] = re.findall(r"proxy_next_upstream_timeout (\d+)ms;", template)
    for facade in (Settings(), Settings(read_timeout_s=0.1, connect_timeout_s=0.1)):
        assert int(proxy_read_timeout(facade).removesuffix("s")) * 1000 > int(retry_window_ms)


def test_the_nginx_images_read_timeout_follows_the_facades_default_read_timeout():
    assert env_defaults("nginx")["NGINX_PROXY_READ_TIMEOUT"] == proxy_read_timeout(Settings())


def test_the_native_nginx_waits_as_long_as_the_facades_read_timeout_asks(tmp_path):
    settings = StackSettings(facade=Settings(read_timeout_s=45.0), run_dir=tmp_path / "run", log_dir=tmp_path / "logs")
    rendered = nginx_config(settings).read_text()
    assert re.findall(r"proxy_read_timeout (\S+);", rendered) == ["90s"]
    assert re.findall(r"worker_shutdown_timeout (\S+);", rendered) == ["90s"]


def test_the_facade_asks_for_a_description_with_the_header_the_handler_answers():
    assert DESCRIBE_HEADER == HANDLER_DESCRIBE_HEADER
