"""volnet vs PyTorch CPU, side by side: ``python -m benchmarks [--quick] [--json PATH]``.

Not part of the test run. This package's ``__init__`` must not import NumPy:
``__main__`` sets the thread-count environment variables first (OpenBLAS and
OpenMP read them once, when the library loads). See README.md.
"""
