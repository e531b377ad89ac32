"""Shared fixtures of the kernel tests."""

import pytest

from volnet.runtime import backend


@pytest.fixture(scope="module", params=["numpy", "numba"])
def both_kernel_paths(request):
    """Run a module's tests on the NumPy reference kernels and on the compiled ones
    (``pytestmark = pytest.mark.usefixtures("both_kernel_paths")``)."""
    if request.param == "numba" and not backend.numba_available():
        pytest.skip("numba missing")
    with backend.use_kernels(request.param):
        yield request.param
