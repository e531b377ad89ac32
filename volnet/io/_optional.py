"""Lazy imports of optional extras, with an error that says how to install them."""

from __future__ import annotations

import importlib

from volnet.errors import VolnetError


class MissingDependencyError(VolnetError, ImportError):
    """An optional package (e.g. ``onnx``) is needed for this feature but not installed."""


def install_hint(extra: str) -> str:
    """The pip line for an extra, both from PyPI and from a source checkout.

    Example:
        >>> install_hint("onnx")
        "pip install 'volnet[onnx]' (in a volnet source checkout: pip install '.[onnx]')"
    """
    return f"pip install 'volnet[{extra}]' (in a volnet source checkout: pip install '.[{extra}]')"


def require(module: str, extra: str, feature: str):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{feature} needs the optional package {module!r}, which is not installed; "
            f"install it with: {install_hint(extra)}") from None
