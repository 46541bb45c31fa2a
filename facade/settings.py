"""The facade's configuration, read once at start-up from FACADE_* environment variables."""

import math
import os
import re
import socket
from dataclasses import dataclass, fields
from urllib.parse import urlsplit

PREFIX = "FACADE_"
SAFE_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Variables earlier versions read, and what to do instead: naming one is an error, not a silent no-op.
RETIRED = {
    "FACADE_TORCHSERVE_MANAGEMENT_URL": (
        "the facade no longer uses TorchServe's management API (readiness and /info come from the "
        "inference API, FACADE_TORCHSERVE_URL); remove the variable (docs/security.md)"
    ),
}
# What of a text over the model's token limit is classified (facade/options.py; the handler's
# sentiment_truncation.py does it).
TRUNCATION_MODES = ("right", "left", "head_tail", "error", "window")


class SettingsError(ValueError):
    """A FACADE_* variable holds a value the facade cannot start with."""


@dataclass(frozen=True)
class Settings:
    """Every knob of the facade; field `x_y` is read from FACADE_X_Y."""

    # One URL, or several separated by commas (replicas on other ports); each host name stands for
    # every address it resolves to (facade/replicas.py).
    torchserve_url: str = "http://127.0.0.1:8090"
    # Seconds between two lookups of the TorchServe host names (a failed replica also triggers one).
    resolve_interval_s: float = 5.0
    model_name: str = "sentiment"
    connect_timeout_s: float = 1.0
    read_timeout_s: float = 15.0
    ready_timeout_s: float = 2.0
    max_texts: int = 64
    # Tokens per request, as the handler counts them (docs/overload.md: what one request costs, and
    # why the read timeout is enough for it on an idle 2-core CPU).
    max_request_tokens: int = 8192
    max_text_chars: int = 10000
    max_body_bytes: int = 1048576
    retry_after_s: int = 1
    container_id: str = "local"
    host: str = "127.0.0.1"
    port: int = 5001
    workers: int = 2
    threads: int = 16
    graceful_timeout_s: int = 20
    log_level: str = "info"
    # Where Gunicorn's workers keep their metric files; empty: a private temporary folder per start.
    metrics_dir: str = ""
    # The truncation of requests that do not choose one (FACADE_DEFAULT_TRUNCATION).
    default_truncation: str = "right"
    # OTLP/HTTP traces URL (facade/tracing.py); empty: no spans recorded or exported.
    otlp_endpoint: str = ""
    # A file of API key hashes (facade/auth.py); empty: no keys needed.
    api_keys_file: str = ""
    # Seconds GET /info keeps what TorchServe said about the model before asking again.
    info_ttl_s: float = 30.0

    @classmethod
    def from_env(cls, environ=os.environ) -> "Settings":
        """Return settings from FACADE_* variables; unset or empty ones keep their defaults."""
        for name, instead in RETIRED.items():
            if environ.get(name, "").strip():
                raise SettingsError(f"{name} is set, but {instead}")
        values = {}
        for field in fields(cls):
            raw = environ.get(env_name(field.name), "").strip()
            if raw:
                values[field.name] = _parsed(field.name, field.type, raw)
        if "container_id" not in values:
            port = values.get("port", cls.port)
            values["container_id"] = default_container_id(port, os.path.exists("/.dockerenv"), socket.gethostname())
        return cls(**values)

    def __post_init__(self) -> None:
        urls = split_urls(self.torchserve_url)
        allowed = "http:// or https:// URLs with a host, comma-separated"
        _require(urls and all(map(_is_http_url, urls)), "torchserve_url", self, allowed)
        _require(MODEL_NAME.fullmatch(self.model_name), "model_name", self, "letters, digits, '.', '_', '-'")
        for name in ("connect_timeout_s", "read_timeout_s", "ready_timeout_s", "resolve_interval_s"):
            value = getattr(self, name)
            _require(math.isfinite(value) and value > 0, name, self, "a number of seconds above 0")
        for name in ("max_texts", "max_text_chars", "max_body_bytes", "max_request_tokens", "workers", "threads"):
            _require(getattr(self, name) >= 1, name, self, "a whole number of at least 1")
        for name in ("retry_after_s", "graceful_timeout_s"):
            _require(getattr(self, name) >= 0, name, self, "a whole number of seconds, 0 or more")
        _require(1 <= self.port <= 65535, "port", self, "a TCP port from 1 to 65535")
        _require(self.host, "host", self, "an interface address or host name")
        _require(SAFE_ID.fullmatch(self.container_id), "container_id", self, "1-128 of A-Z a-z 0-9 . _ : -")
        _require(self.log_level.lower() in LOG_LEVELS, "log_level", self, "one of " + ", ".join(LOG_LEVELS))
        _require(
            self.default_truncation in TRUNCATION_MODES,
            "default_truncation",
            self,
            "one of " + ", ".join(TRUNCATION_MODES),
        )
        _require(
            math.isfinite(self.info_ttl_s) and self.info_ttl_s >= 0,
            "info_ttl_s",
            self,
            "a number of seconds, 0 or more",
        )
        _require(
            not self.otlp_endpoint or _is_http_url(self.otlp_endpoint),
            "otlp_endpoint",
            self,
            "empty, or an http:// or https:// URL",
        )
        _require(
            _is_usable_dir(self.metrics_dir),
            "metrics_dir",
            self,
            "empty, or the absolute path of an existing writable folder",
        )


def split_urls(value: str) -> list[str]:
    """Return the URLs of a comma-separated list, without blanks."""
    return [url.strip() for url in value.split(",") if url.strip()]


def env_name(field_name: str) -> str:
    """Return the environment variable that sets a field, e.g. FACADE_PORT for port."""
    return PREFIX + field_name.upper()


def default_container_id(port: int, in_docker: bool, hostname: str) -> str:
    """Return the ID this instance reports when FACADE_CONTAINER_ID is not set."""
    # Docker sets the hostname to the container's short ID; outside Docker several
    # instances share one hostname, so the port tells them apart.
    return hostname if in_docker else f"{hostname}-{port}"


def _parsed(name: str, kind: type, raw: str):
    if kind is str:
        return raw
    try:
        return kind(raw)
    except ValueError:
        allowed = "a whole number" if kind is int else "a number"
        raise SettingsError(f"{env_name(name)}={raw!r} is invalid: it must be {allowed}") from None


def _require(ok, name: str, settings: Settings, allowed: str) -> None:
    if not ok:
        value = getattr(settings, name)
        raise SettingsError(f"{env_name(name)}={value!r} is invalid: it must be {allowed}")


def _is_usable_dir(path: str) -> bool:
    return not path or (os.path.isabs(path) and os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK))


def _is_http_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not (parts.query or parts.fragment)
