"""Audio features: openSMILE's eGeMAPSv02 functionals (88 acoustic parameters)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

from cberl_model.features.media import SAMPLE_RATE, UtteranceMedia

EGEMAPS = "opensmile-egemaps-v02"
EGEMAPS_DIM = 88
MIN_AUDIO_S = 0.1
"""openSMILE fills functionals with NaN below roughly this length; such audio counts as absent."""


def egemaps_version() -> str:
    """Our pooling version plus openSMILE's: another openSMILE may compute other values."""
    import opensmile

    return f"1-opensmile{opensmile.__version__}"


class EgemapsFeaturizer:
    """The extended Geneva minimalistic acoustic parameter set (Eyben et al., 2016).

    Utterance-level functionals of pitch, loudness, jitter/shimmer, formants, spectral
    slope and MFCC 1-4: cheap, speaker-independent paralinguistic cues. Audio that is
    absent or shorter than :data:`MIN_AUDIO_S` (or gives non-finite values) yields ``None``.
    """

    modality = "audio"
    name = EGEMAPS
    dim = EGEMAPS_DIM

    def __init__(self) -> None:
        import opensmile

        self.version = egemaps_version()
        self.smile = opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                                     feature_level=opensmile.FeatureLevel.Functionals)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(version={self.version!r})"

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        """One ``(88,)`` vector per utterance with usable audio, else ``None``."""
        return [self._one(m.audio) for m in batch]

    def _one(self, audio: np.ndarray | None) -> np.ndarray | None:
        if audio is None or len(audio) < MIN_AUDIO_S * SAMPLE_RATE:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "segment too short": handled below
            values = self.smile.process_signal(np.asarray(audio, dtype=np.float32), SAMPLE_RATE)
        vector = values.to_numpy(dtype=np.float32).reshape(-1)
        return vector if vector.shape == (EGEMAPS_DIM,) and np.isfinite(vector).all() else None
