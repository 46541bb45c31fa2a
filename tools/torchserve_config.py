"""TorchServe's own settings file (config.properties): the one home of its ports and model name.

The launcher (stack/torchserve.py) and the tools read their defaults from here instead of
restating them. Read as TorchServe reads it: `key=value` lines, `#` comments; with
enable_envvars_config=true a TS_<KEY> variable of `environ` overrides <key> (the Docker image
binds the addresses to 0.0.0.0 that way).
"""

from pathlib import Path
from urllib.parse import urlsplit

CONFIG_FILE = Path(__file__).resolve().parent.parent / "config.properties"


def properties(path=CONFIG_FILE, environ=None):
    """Return the keys of a TorchServe config file, with TS_<KEY> variables of `environ` applied."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    if environ and values.get("enable_envvars_config") == "true":
        values.update({key: environ[f"TS_{key.upper()}"] for key in values if environ.get(f"TS_{key.upper()}")})
    return values


def model_name(values):
    """Return the name of the model TorchServe loads at start-up (load_models=<name>.mar)."""
    return values["load_models"].removesuffix(".mar")


def port(values, key):
    """Return the TCP port of an address key such as management_address."""
    return urlsplit(values[key]).port


def local_url(values, key):
    """Return the loopback URL of an address key (a 0.0.0.0 bind is reached on 127.0.0.1)."""
    return f"http://127.0.0.1:{port(values, key)}"


def management_address(values):
    """Return where the management API listens: `unix:<absolute socket path>` (a relative path is
    TorchServe's working directory's, the project dir natively), or the loopback URL of a TCP bind."""
    address = values["management_address"]
    if not address.startswith("unix:"):
        return local_url(values, "management_address")
    path = Path(address.removeprefix("unix:"))
    return f"unix:{path if path.is_absolute() else CONFIG_FILE.parent / path}"
