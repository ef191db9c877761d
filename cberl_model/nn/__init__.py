"""The CBERL network, one part per module (PyG style: the class is named after its file)."""

from cberl_model.nn.cberl import CBERL, CBERLConfig
from cberl_model.nn.concat_fusion import ConcatFusion
from cberl_model.nn.context_lstm import ContextLSTM
from cberl_model.nn.djvae import DJVAEFusion
from cberl_model.nn.ensemble import WeakClassifierEnsemble
from cberl_model.nn.focal_loss import FocalLoss
from cberl_model.nn.masked_reconstruction import MaskedReconstruction
from cberl_model.nn.speaker_gat import SpeakerGAT

__all__ = [
    "CBERL",
    "CBERLConfig",
    "ConcatFusion",
    "ContextLSTM",
    "DJVAEFusion",
    "FocalLoss",
    "MaskedReconstruction",
    "SpeakerGAT",
    "WeakClassifierEnsemble",
]
