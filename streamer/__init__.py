"""The WebRTC gateway: live calls in, timed, transcribed, featurized utterance events out.

Stages (one module each): ``audio`` (decode, resample, media timeline) -> ``vad``
(endpointing) -> ``asr`` (faster-whisper) -> ``pipeline`` (featurize, per-call ordering)
-> ``publisher`` (Kafka ``utterances``). ``gateway`` is the HTTP/WebRTC front door,
``datachannel`` pushes a call's emotion events back to its participants, and ``join`` is a
real client that streams a WAV file into a call.
"""
