"""Offline training: ``python -m cberl_model.train --train FORMAT:PATH --dev FORMAT:PATH``."""
