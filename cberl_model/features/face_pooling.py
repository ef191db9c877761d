"""What both face featurizers share: frame checks, downscaling, pooling over frames."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from cberl_model.features.media import FeaturizerError, UtteranceMedia

FrameDescriptor = Callable[[np.ndarray], np.ndarray | None]
"""Per-frame face descriptor of an RGB frame, ``None`` when no face is found."""


def checked_frame(frame: np.ndarray, max_side: int) -> np.ndarray:
    """A contiguous RGB uint8 frame whose longest side is at most ``max_side`` pixels.

    Detection cost grows with the pixel count and landmarks are scale-free, so big frames
    (MELD's are 1280x720) are shrunk first; the same shrink runs in training and serving.

    Raises:
        FeaturizerError: If the frame is not an ``H x W x 3`` uint8 array.
    """
    import cv2

    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise FeaturizerError(f"video frames must be H x W x 3 uint8 RGB arrays, got "
                              f"{frame.dtype} {tuple(frame.shape)}")
    height, width = frame.shape[:2]
    scale = max_side / max(height, width)
    if scale < 1.0:
        frame = cv2.resize(frame, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(frame)


def pooled_faces(frames: Sequence[np.ndarray], describe: FrameDescriptor,
                 max_side: int) -> np.ndarray | None:
    """``[mean, std, share of frames with a face]`` of the per-frame descriptors.

    Returns ``None`` (the modality is absent for this utterance) when no frame shows a
    face: the fusion then leaves the visual expert out instead of reading a made-up vector.
    """
    found = [d for d in (describe(checked_frame(f, max_side)) for f in frames) if d is not None]
    if not found:
        return None
    stack = np.stack(found)
    share = np.array([len(found) / len(frames)], dtype=np.float32)
    return np.concatenate([stack.mean(0), stack.std(0), share]).astype(np.float32)


class PooledFaceFeaturizer:
    """Base of the face featurizers: a per-frame descriptor (``_describe``), pooled over
    the utterance's frames by :func:`pooled_faces` after shrinking them to ``max_side``."""

    modality = "visual"
    max_side: int

    def featurize(self, batch: Sequence[UtteranceMedia]) -> list[np.ndarray | None]:
        """One ``(dim,)`` vector per utterance with a visible face, else ``None``."""
        return [pooled_faces(m.frames, self._describe, self.max_side) if len(m.frames) else None
                for m in batch]

    def _describe(self, frame: np.ndarray) -> np.ndarray | None:
        raise NotImplementedError
