"""Cost of each featurizer per second of speech on this machine (CPU, one thread).

Speech: espeak-ng sentences (about 2-8 s); video: the Grace Hopper photo (512x600) at
the corpus builder's 5 frames/s, so every frame holds a face (the worst case for the face
featurizers, which stop early on frames without one). Each featurizer gets the utterances
one at a time, as the streamer calls it after each endpointed utterance. The real-time
share is milliseconds of work per 1000 ms of speech: below 100% keeps up with one talker.

Run: ``OMP_NUM_THREADS=1 python benchmarks/featurize.py`` -> docs/featurize.json and .md.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import cv2  # noqa: E402
import torch  # noqa: E402

from cberl_model.artifact import load_artifact  # noqa: E402
from cberl_model.corpus.media_files import decode_audio  # noqa: E402
from cberl_model.features.media import FRAME_RATE, UtteranceMedia  # noqa: E402
from cberl_model.features.registry import FEATURIZERS, build_featurizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = [
    "Hello, how are you today?",
    "I really cannot believe you did that without asking me first.",
    "The meeting has been moved to Thursday afternoon, so please update your calendar and "
    "tell the rest of the team.",
    "Wonderful, thank you so much!",
    "Well, I suppose we could try it your way, but I am not convinced it will work out.",
]
REPEATS = 3


def _utterances(work: Path) -> list[UtteranceMedia]:
    import matplotlib

    face = cv2.cvtColor(cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" /
                                       "grace_hopper.jpg")), cv2.COLOR_BGR2RGB)
    media = []
    for i, text in enumerate(SENTENCES):
        wav = work / f"{i}.wav"
        subprocess.run(["espeak-ng", "-w", str(wav), text], check=True, capture_output=True)
        audio = decode_audio(wav)
        frames = tuple(face for _ in range(max(1, round(len(audio) / 16000 * FRAME_RATE))))
        media.append(UtteranceMedia(text, audio, frames, FRAME_RATE))
    return media


def main() -> None:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        media = _utterances(Path(tmp))
    speech_s = sum(m.duration_s for m in media)
    encoder = load_artifact().encoder
    rows = []
    for name, entry in FEATURIZERS.items():
        featurizer, spec = build_featurizer(name, encoder=encoder, device="cpu")
        featurizer.featurize(media[:1])  # warm-up (lazy initialisation, caches)
        started = time.perf_counter()
        for _ in range(REPEATS):
            for item in media:
                featurizer.featurize([item])
        seconds = (time.perf_counter() - started) / REPEATS
        ms_per_s = 1000 * seconds / speech_s
        rows.append({"featurizer": name, "modality": entry.modality, "version": spec.feature_id,
                     "dim": spec.dim, "ms_per_speech_s": round(ms_per_s, 1),
                     "realtime_share_pct": round(ms_per_s / 10, 1),
                     "ms_per_utterance": round(1000 * seconds / len(media), 1)})
        print(f"{name:24s} {ms_per_s:8.1f} ms per s of speech ({ms_per_s / 10:.1f}% of real time)")
    result = {"machine": {"cpu": platform.processor() or platform.machine(),
                          "cores": os.cpu_count(), "threads": 1, "python": platform.python_version()},
              "speech_s": round(speech_s, 2), "utterances": len(media), "repeats": REPEATS,
              "frame_rate": FRAME_RATE, "featurizers": rows}
    docs = ROOT / "docs"
    docs.mkdir(exist_ok=True)
    (docs / "featurize.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["| featurizer | modality | dim | ms per s of speech | share of real time |",
             "|---|---|---|---|---|"]
    lines += [f"| `{r['featurizer']}` | {r['modality']} | {r['dim']} | {r['ms_per_speech_s']} | "
              f"{r['realtime_share_pct']}% |" for r in rows]
    (docs / "featurize.md").write_text(
        f"Featurizer cost on this machine's CPU, one thread ({len(media)} espeak-ng utterances, "
        f"{speech_s:.1f} s of speech, face video at {FRAME_RATE:g} frames/s; "
        "`OMP_NUM_THREADS=1 python benchmarks/featurize.py`):\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
