"""The lecture pages: ``/lecture/conv``, ``/backprop``, ``/receptive-field``, ``/dense``, ``/patterns``,
``/dilated``.

Each module computes one page's numbers with volnet's layers and tools;
:mod:`volnet.web.lecture.page` serves them.
"""
