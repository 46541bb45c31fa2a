"""What the handler can run: runtime x precision modes, and which one is the default."""

from dataclasses import dataclass
from pathlib import Path

import yaml

import tools  # noqa: F401  (makes the handler's modules importable by their names in the .mar)

from sentiment_config import RUNTIMES, HandlerOptions

MODEL_CONFIG = Path(__file__).resolve().parent.parent / "handler" / "model-config.yaml"


@dataclass(frozen=True, order=True)
class Mode:
    """One way the handler can run the model."""

    runtime: str
    precision: str

    @property
    def name(self):
        """Return e.g. 'onnx fp32'."""
        return f"{self.runtime} {self.precision}"

    @classmethod
    def parse(cls, text):
        """Return the mode of 'runtime-precision' (or 'runtime precision')."""
        runtime, _, precision = text.replace(" ", "-").partition("-")
        if not precision:
            raise ValueError(f"a mode is runtime-precision (e.g. onnx-fp32), got {text!r}")
        return cls(runtime, precision)

    def handler_options(self):
        """Return the handler: section of model-config.yaml that selects this mode."""
        options = {"precision": self.precision}
        if handler_runtimes() != ("torch",):
            options["runtime"] = self.runtime
        return options

    def build_env(self):
        """Return the `make mar` variables that select this mode."""
        env = {"PRECISION": self.precision}
        if handler_runtimes() != ("torch",):
            env["RUNTIME"] = self.runtime
        return env


def handler_runtimes():
    """Return the runtimes the handler offers."""
    return RUNTIMES


def default_mode(model_config=MODEL_CONFIG):
    """Return the mode an archive built without RUNTIME/PRECISION serves."""
    section = (yaml.safe_load(Path(model_config).read_text()) or {}).get("handler") or {}
    precision = section.get("precision", HandlerOptions.precision)
    # auto packs fp32 for the random-weights timing model (it gives every text one label, so the
    # int8 check refuses to judge it; tools/precision_gate.py): that is what the default serves here.
    return Mode(section.get("runtime", HandlerOptions.runtime), "fp32" if precision == "auto" else precision)


def int8_mode(runtimes):
    """Return the int8 mode measured: with ONNX Runtime when the handler offers it."""
    return Mode("onnx" if "onnx" in runtimes else runtimes[0], "int8")


def offered_modes(runtimes, fast_bf16):
    """Return the modes worth measuring here: fp32 of each runtime, int8 (with ONNX Runtime when
    offered), and torch bf16 only where the CPU has bf16 instructions."""
    modes = [Mode(runtime, "fp32") for runtime in runtimes] + [int8_mode(runtimes)]
    if fast_bf16 and "torch" in runtimes:
        modes.append(Mode("torch", "bf16"))
    return modes
