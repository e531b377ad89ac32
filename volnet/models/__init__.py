"""The model zoo: tables plus one builder per family, and a registry for the CLI and demo."""

from volnet.models.lenet import cifar_example, lenet5
from volnet.models.registry import INPUT_SHAPES, MODELS, build

__all__ = ["lenet5", "cifar_example", "MODELS", "INPUT_SHAPES", "build"]
