"""The lecture pages: ``/lecture/conv``, ``/backprop``, ``/receptive-field``, ``/dense``, ``/patterns``.

Each module computes one page's numbers with volnet's layers and tools;
:mod:`volnet.web.lecture.page` serves them.
"""
