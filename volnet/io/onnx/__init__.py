"""ONNX in and out: :mod:`~volnet.io.onnx.importer` (``load_onnx``) builds a volnet Graph from
a file, :mod:`~volnet.io.onnx.export` (``export_onnx``) writes a network as one.

The operator tables live in the leaf :mod:`~volnet.io.onnx.registry`; the ``ops*`` modules
fill the import table, ``fold`` the constant-folding one, the ``export_*`` modules the export
one. ``volnet.io`` exposes the public functions.
"""
