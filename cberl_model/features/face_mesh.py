"""Visual features: facial geometry from MediaPipe Face Mesh, pooled over the frames."""

from __future__ import annotations

import numpy as np

from cberl_model.features.face_pooling import PooledFaceFeaturizer

FACE_MESH = "mediapipe-face-mesh"
MAX_SIDE = 640
"""Frames are shrunk to this longest side before detection."""


def _expression_points() -> tuple[int, ...]:
    """Landmarks of the lips, eyes and eyebrows: the ones that move with expression."""
    import mediapipe as mp

    fm = mp.solutions.face_mesh
    groups = (fm.FACEMESH_LIPS, fm.FACEMESH_LEFT_EYE, fm.FACEMESH_RIGHT_EYE,
              fm.FACEMESH_LEFT_EYEBROW, fm.FACEMESH_RIGHT_EYEBROW)
    return tuple(sorted({i for group in groups for edge in group for i in edge}))


def face_mesh_version() -> str:
    """Our descriptor version plus mediapipe's (its bundled mesh model may change)."""
    import mediapipe

    return f"1-mediapipe{mediapipe.__version__}"


class FaceMeshFeaturizer(PooledFaceFeaturizer):
    """Expression geometry: 92 lip/eye/brow landmarks of the most prominent face.

    Per frame, the 468 mesh landmarks are put in pixel units, centred on their mean and
    divided by their RMS radius (so position and size of the face do not matter); the
    92 expression landmarks' ``(x, y)`` form a 184-d descriptor. The utterance vector is
    the mean and standard deviation over frames with a face plus the share of such frames
    (369-d). No face in any frame (or no frames) gives ``None``.

    MediaPipe runs in static-image mode (each frame on its own), so a vector depends only on
    the frames handed in, never on earlier calls. One instance is not thread-safe.
    """

    max_side = MAX_SIDE
    name = FACE_MESH

    def __init__(self) -> None:
        import mediapipe as mp

        self.points = np.array(_expression_points())
        self.dim = 2 * 2 * len(self.points) + 1
        self.version = face_mesh_version()
        self.mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                    refine_landmarks=False,
                                                    min_detection_confidence=0.5)

    def __repr__(self) -> str:
        return f"{self.__class__.__name__}(points={len(self.points)}, dim={self.dim})"

    def _describe(self, frame: np.ndarray) -> np.ndarray | None:
        result = self.mesh.process(frame)
        if not result.multi_face_landmarks:
            return None
        height, width = frame.shape[:2]
        marks = result.multi_face_landmarks[0].landmark
        xy = np.array([(p.x * width, p.y * height) for p in marks], dtype=np.float64)
        xy -= xy.mean(0)
        xy /= max(float(np.sqrt((xy ** 2).sum(1).mean())), 1e-6)
        return xy[self.points].reshape(-1).astype(np.float32)
