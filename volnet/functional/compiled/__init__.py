"""Compiled (numba) kernels, one module per kind; chosen through ``volnet.functional.backend``."""
