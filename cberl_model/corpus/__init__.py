"""The corpus builder: raw media plus labels -> a cached feature corpus the trainer reads.

``python -m cberl_model.corpus build SOURCE OUT`` (see :mod:`cberl_model.corpus.build`);
the trainer then reads ``cached:OUT``. The layout of ``OUT`` is documented in
:mod:`cberl_model.data.cached`.
"""
