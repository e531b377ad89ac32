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


@pytest.fixture
def two_threads():
    """Two numba threads (the block threads' count); skipped where numba has one (a one-core
    machine, NUMBA_NUM_THREADS=1): what these tests check is how work splits over two."""
    if not backend.numba_available():
        pytest.skip("numba missing")
    import numba
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs two numba threads (NUMBA_NUM_THREADS is 1 here)")
    before = numba.get_num_threads()
    numba.set_num_threads(2)
    yield 2
    numba.set_num_threads(before)
