"""Featurizers by name: what the corpus builder, the trainer and the streamer build.

A model artifact's feature spec names one featurizer per modality (``extractor``), its
version (``feature_id``), its vector size and its options. Serving rebuilds exactly that
featurizer from this registry and refuses to run when the installed one reports another
version or size (:func:`check_featurizer`), so features never silently drift from training.

Built-in featurizers (heavy libraries are imported only when one is built):

==========================  ========  ====================================  ==========
name                        modality  what                                  dim
==========================  ========  ====================================  ==========
``text-encoder``            text      the model's sentence encoder          384 (MiniLM)
``opensmile-egemaps-v02``   audio     eGeMAPSv02 functionals (openSMILE)    88
``whisper-encoder``         audio     mean Whisper encoder state            384 (tiny.en)
``mediapipe-face-mesh``     visual    lip/eye/brow geometry, mean+std       369
``opencv-haar-hog``         visual    Haar face crop HOG, mean+std          649
==========================  ========  ====================================  ==========
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cberl_model.features.media import Featurizer, FeaturizerError
from cberl_model.features.spec import TEXT_ENCODER, ModalitySpec
from cberl_model.features.whisper_model import DEFAULT_WHISPER_MODEL

if TYPE_CHECKING:  # transformers is slow to import; corpus-builder workers never need it
    from cberl_model.features.text_encoder import TextEncoder


@dataclass(frozen=True)
class BuildContext:
    """What a featurizer may need besides its options.

    Attributes:
        options: The featurizer's options (registration defaults filled in).
        encoder: The model's text encoder (only the text featurizer uses it).
        device / compute_type: For the shared Whisper model (see ``shared_whisper_model``).
    """

    options: Mapping[str, str] = field(default_factory=dict)
    encoder: TextEncoder | None = None
    device: str = "auto"
    compute_type: str = "default"


@dataclass(frozen=True)
class Registration:
    """A featurizer's name, modality, accepted options (with defaults) and constructor."""

    name: str
    modality: str
    build: Callable[[BuildContext], Featurizer]
    defaults: Mapping[str, str] = field(default_factory=dict)

    def options(self, given: Mapping[str, str]) -> dict[str, str]:
        """``given`` over the defaults.

        Raises:
            FeaturizerError: On an option this featurizer does not take.
        """
        unknown = sorted(set(given) - set(self.defaults))
        if unknown:
            accepted = ", ".join(self.defaults) or "none"
            raise FeaturizerError(f"featurizer {self.name!r} takes no option(s) "
                                  f"{', '.join(unknown)} (accepted: {accepted})")
        return {**self.defaults, **given}


def _text(context: BuildContext) -> Featurizer:
    from cberl_model.features.text_featurizer import TextFeaturizer

    if context.encoder is None:
        raise FeaturizerError(f"featurizer {TEXT_ENCODER!r} needs the model's text encoder")
    return TextFeaturizer(context.encoder)


def _egemaps(context: BuildContext) -> Featurizer:
    from cberl_model.features.egemaps import EgemapsFeaturizer

    return EgemapsFeaturizer()


def _whisper(context: BuildContext) -> Featurizer:
    from cberl_model.features.whisper_encoder import WhisperEncoderFeaturizer

    return WhisperEncoderFeaturizer(context.options["model"], context.device, context.compute_type)


def _face_mesh(context: BuildContext) -> Featurizer:
    from cberl_model.features.face_mesh import FaceMeshFeaturizer

    return FaceMeshFeaturizer()


def _face_haar(context: BuildContext) -> Featurizer:
    from cberl_model.features.face_haar import FaceHaarFeaturizer

    return FaceHaarFeaturizer()


FEATURIZERS: dict[str, Registration] = {r.name: r for r in (
    Registration(TEXT_ENCODER, "text", _text),
    Registration("opensmile-egemaps-v02", "audio", _egemaps),
    Registration("whisper-encoder", "audio", _whisper, {"model": DEFAULT_WHISPER_MODEL}),
    Registration("mediapipe-face-mesh", "visual", _face_mesh),
    Registration("opencv-haar-hog", "visual", _face_haar),
)}
"""Every featurizer that can be named in a feature spec; :func:`register` adds more."""


def register(registration: Registration) -> None:
    """Add a featurizer (e.g. a stronger extractor plugged in by a deployment).

    Raises:
        FeaturizerError: If the name is taken.
    """
    if registration.name in FEATURIZERS:
        raise FeaturizerError(f"a featurizer named {registration.name!r} is already registered")
    FEATURIZERS[registration.name] = registration


def registration(name: str, modality: str | None = None) -> Registration:
    """The registration of ``name``, checked against ``modality`` when given.

    Raises:
        FeaturizerError: If no featurizer has that name, or it serves another modality.
    """
    found = FEATURIZERS.get(name)
    if found is None:
        raise FeaturizerError(f"no featurizer named {name!r} is installed; known: "
                              f"{', '.join(FEATURIZERS)}")
    if modality is not None and found.modality != modality:
        raise FeaturizerError(f"featurizer {name!r} produces {found.modality} features, "
                              f"not {modality}")
    return found


def build_featurizer(name: str, options: Mapping[str, str] | None = None,
                     encoder: TextEncoder | None = None, device: str = "auto",
                     compute_type: str = "default") -> tuple[Featurizer, ModalitySpec]:
    """Build a featurizer by name; returns it with the spec entry that records it."""
    entry = registration(name)
    full = entry.options(options or {})
    featurizer = entry.build(BuildContext(full, encoder, device, compute_type))
    return featurizer, ModalitySpec(featurizer.name, featurizer.version, featurizer.dim, full)


def check_featurizer(modality: str, spec: ModalitySpec, featurizer: Featurizer) -> None:
    """Refuse a featurizer that would not reproduce the features a model was trained on.

    Raises:
        FeaturizerError: Naming the modality and what differs (name, version or dim).
    """
    wanted = (spec.extractor, spec.feature_id, spec.dim)
    installed = (featurizer.name, featurizer.version, featurizer.dim)
    if wanted != installed or featurizer.modality != modality:
        raise FeaturizerError(
            f"{modality} featurizer mismatch: the model was trained with {spec.extractor!r} "
            f"version {spec.feature_id!r} ({spec.dim}-d), the installed one is "
            f"{featurizer.name!r} version {featurizer.version!r} ({featurizer.dim}-d) for "
            f"{featurizer.modality}; install the featurizer the model was trained with or "
            f"retrain")
