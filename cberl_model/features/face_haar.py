"""Visual features without MediaPipe: OpenCV Haar face detection + HOG of the face crop."""

from __future__ import annotations

import numpy as np

from cberl_model.features.face_pooling import PooledFaceFeaturizer

FACE_HAAR = "opencv-haar-hog"
MAX_SIDE = 320
"""Frames are shrunk to this longest side before detection (Haar cost grows with pixels)."""
_CROP = 48
"""Side of the square grey face crop the HOG descriptor reads."""


def face_haar_version() -> str:
    """Our descriptor version plus OpenCV's major.minor (cascade and HOG code)."""
    import cv2

    return "1-opencv" + ".".join(cv2.__version__.split(".")[:2])


class FaceHaarFeaturizer(PooledFaceFeaturizer):
    """Appearance of the largest frontal face: a fallback where MediaPipe is unavailable.

    Per frame: Viola-Jones frontal-face cascade (``haarcascade_frontalface_default``) on
    the histogram-equalised grey frame; the largest face is cropped to 48x48 and described
    by a HOG (16-px blocks, 8-px cells, 9 bins: 324-d). The utterance vector is the mean
    and standard deviation over frames with a face plus the share of such frames (649-d);
    no face gives ``None``. It differs from :class:`FaceMeshFeaturizer`'s vectors, so a
    model is trained with one or the other, never mixed.
    """

    max_side = MAX_SIDE
    name = FACE_HAAR

    def __init__(self) -> None:
        import cv2

        self.cascade = cv2.CascadeClassifier(cv2.data.haarcascades
                                             + "haarcascade_frontalface_default.xml")
        self.hog = cv2.HOGDescriptor((_CROP, _CROP), (16, 16), (16, 16), (8, 8), 9)
        self.dim = 2 * int(self.hog.getDescriptorSize()) + 1
        self.version = face_haar_version()

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(dim={self.dim})"

    def _describe(self, frame: np.ndarray) -> np.ndarray | None:
        import cv2

        grey = cv2.equalizeHist(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY))
        min_side = max(24, min(grey.shape) // 8)
        faces = self.cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=5,
                                              minSize=(min_side, min_side))
        if len(faces) == 0:
            return None
        x, y, w, h = max(faces, key=lambda box: int(box[2]) * int(box[3]))
        crop = cv2.resize(grey[y:y + h, x:x + w], (_CROP, _CROP), interpolation=cv2.INTER_AREA)
        return self.hog.compute(crop).reshape(-1).astype(np.float32)
