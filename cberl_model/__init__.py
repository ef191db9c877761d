"""CBERL emotion recognition in conversation: data, model, training, incremental inference.

Entry points: ``python -m cberl_model.train``, ``python -m cberl_model.evaluate`` and
:class:`cberl_model.inference.EmotionRecognizer` (what the live workers call).
"""

__version__ = "0.1.0"
