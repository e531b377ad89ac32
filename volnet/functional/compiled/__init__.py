"""Compiled (numba) kernels, one module per family; the NumPy modules one level up are the
reference path and choose these through ``volnet.runtime.backend.compiled()``.

Importing a module here imports numba, so only callers that already checked
``backend.compiled()`` import them.
"""
