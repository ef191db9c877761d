"""Tests for the corpus readers: MELD/EmoryNLP CSV, MERC feature pickles, JSONL, registry.

Every test writes real files to ``tmp_path`` (or reads the shared MELD/EmoryNLP dev
splits), so the readers are exercised exactly as the trainer uses them.
"""

from __future__ import annotations

import csv
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cberl_model.data.conversation import Conversation, Corpus, CorpusError, Utterance
from cberl_model.data.emorynlp import EMORYNLP_LABELS, read_emorynlp_csv
from cberl_model.data.jsonl import read_jsonl, write_jsonl
from cberl_model.data.meld import MELD_LABELS, read_meld_csv
from cberl_model.data.merc_pickle import IEMOCAP_LABELS, read_merc_pickle
from cberl_model.data.registry import load_corpus

SHARED_DATA = Path(__file__).parents[3] / "shared" / "data"

MELD_HEADER = [
    "Sr No.", "Utterance", "Speaker", "Emotion", "Sentiment", "Dialogue_ID", "Utterance_ID",
    "Season", "Episode", "StartTime", "EndTime",
]
EMORY_HEADER = [
    "Utterance", "Speaker", "Emotion", "Scene_ID", "Utterance_ID", "Season", "Episode",
    "Start_Time", "End_Time",
]


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    """Write a UTF-8 CSV the way the MELD release does (quoted where needed)."""
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def meld_row(dia: int, utt: int, text: str, emotion: str, speaker: str = "Ross") -> list[str]:
    """One MELD CSV row with plausible filler in the columns the reader ignores."""
    return [
        "1", text, speaker, emotion, "neutral", str(dia), str(utt), "1", "1",
        "00:00:01,500", "00:00:02,250",
    ]


def emory_row(scene: int, utt: int, text: str, emotion: str, speaker: str) -> list[str]:
    """One EmoryNLP CSV row (season 1, episode 2)."""
    return [text, speaker, emotion, str(scene), str(utt), "1", "2", "00:00:03.795", "00:00:05.004"]


def meld_csv(tmp_path: Path, rows: list[list[str]]) -> Path:
    """A MELD CSV file holding ``rows``."""
    return write_csv(tmp_path / "meld.csv", MELD_HEADER, rows)


def emory_csv(tmp_path: Path, rows: list[list[str]]) -> Path:
    """An EmoryNLP CSV file holding ``rows``."""
    return write_csv(tmp_path / "emory.csv", EMORY_HEADER, rows)


# --- MELD and EmoryNLP CSV --------------------------------------------------------------


def test_meld_csv_groups_dialogues_and_orders_utterances(tmp_path: Path) -> None:
    path = meld_csv(
        tmp_path,
        [
            meld_row(3, 1, "Second.", "Joy", "Monica"),
            meld_row(7, 0, "Other dialogue.", "fear"),
            meld_row(3, 0, "First.", "neutral"),
        ],
    )
    corpus = read_meld_csv(path)
    assert corpus.name == f"meld:{path}"
    assert corpus.labels == MELD_LABELS
    assert [c.conversation_id for c in corpus.conversations] == ["dia3", "dia7"]
    first = corpus.conversations[0].utterances
    assert [u.utterance_id for u in first] == ["dia3_utt0", "dia3_utt1"]
    assert [u.label for u in first] == ["neutral", "joy"]
    assert first[1].speaker == "Monica"
    assert (first[0].start_ms, first[0].end_ms) == (1500, 2250)


def test_emorynlp_csv_parses_speaker_lists_and_scenes(tmp_path: Path) -> None:
    path = emory_csv(
        tmp_path,
        [
            emory_row(1, 1, "Coffee.", "Neutral", "['Rachel Green']"),
            emory_row(1, 0, "Hi.", "Joyful", "['Ross Geller', 'Joey Tribbiani']"),
            emory_row(2, 0, "Bye.", "Scared", "[]"),
        ],
    )
    corpus = read_emorynlp_csv(path)
    assert corpus.labels == EMORYNLP_LABELS
    assert [c.conversation_id for c in corpus.conversations] == ["s01e02c01", "s01e02c02"]
    scene = corpus.conversations[0].utterances
    assert [u.utterance_id for u in scene] == ["s01e02c01u00", "s01e02c01u01"]
    assert [u.speaker for u in scene] == ["Ross Geller & Joey Tribbiani", "Rachel Green"]
    assert [u.label for u in scene] == ["joyful", "neutral"]
    assert corpus.conversations[1].utterances[0].speaker == "unknown"
    assert scene[0].start_ms == 3795


@pytest.mark.parametrize(
    ("write", "read", "rows", "bad"),
    [
        (
            meld_csv,
            read_meld_csv,
            [meld_row(0, 0, "Ok.", "neutral"), meld_row(0, 1, "Hm.", "bored")],
            "bored",
        ),
        (
            emory_csv,
            read_emorynlp_csv,
            [emory_row(1, 0, "Ok.", "Neutral", "['A']"), emory_row(1, 1, "Hm.", "Bored", "['A']")],
            "Bored",
        ),
    ],
)
def test_csv_unknown_label_names_file_and_row(
    tmp_path: Path,
    write: Callable[[Path, list[list[str]]], Path],
    read: Callable[[Path], Corpus],
    rows: list[list[str]],
    bad: str,
) -> None:
    path = write(tmp_path, rows)
    with pytest.raises(CorpusError, match=f"unknown label '{bad}'") as info:
        read(path)
    assert info.value.row == 3
    assert str(info.value).startswith(f"{path}, row 3:")


@pytest.mark.parametrize(
    ("read", "header", "column"),
    [
        (read_meld_csv, [h for h in MELD_HEADER if h != "Emotion"], "Emotion"),
        (read_emorynlp_csv, [h for h in EMORY_HEADER if h != "Scene_ID"], "Scene_ID"),
    ],
)
def test_csv_missing_column(
    tmp_path: Path, read: Callable[[Path], Corpus], header: list[str], column: str
) -> None:
    path = write_csv(tmp_path / "short.csv", header, [["x"] * len(header)])
    with pytest.raises(CorpusError, match=f"missing column\\(s\\) {column}") as info:
        read(path)
    assert info.value.source == str(path)


def test_meld_csv_duplicate_ids(tmp_path: Path) -> None:
    path = meld_csv(tmp_path, [meld_row(4, 2, "A.", "joy"), meld_row(4, 2, "B.", "joy")])
    with pytest.raises(CorpusError, match="dialogue 4 utterance 2 already appeared at row 2"):
        read_meld_csv(path)


def test_emorynlp_csv_duplicate_ids(tmp_path: Path) -> None:
    rows = [emory_row(5, 0, "A.", "Mad", "['A']"), emory_row(5, 0, "B.", "Sad", "['B']")]
    path = emory_csv(tmp_path, rows)
    with pytest.raises(CorpusError, match=r"utterance 0 already appeared at row 2") as info:
        read_emorynlp_csv(path)
    assert info.value.row == 3


def test_csv_curly_apostrophes_survive(tmp_path: Path) -> None:
    text = "Oh my God, he’s lost it. He’s totally lost it."
    meld = read_meld_csv(meld_csv(tmp_path, [meld_row(0, 0, text, "sadness")]))
    emory = read_emorynlp_csv(emory_csv(tmp_path, [emory_row(1, 0, text, "Sad", "['A']")]))
    assert next(meld.utterances()).text == text
    assert next(emory.utterances()).text == text


def test_csv_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="file not found"):
        read_meld_csv(tmp_path / "absent.csv")


def test_real_meld_dev_split() -> None:
    corpus = read_meld_csv(SHARED_DATA / "meld" / "dev_sent_emo.csv")
    assert corpus.num_utterances == 1109
    assert len(corpus.conversations) == 114
    counts = corpus.label_counts()
    assert counts["fear"] > 0
    assert counts["disgust"] > 0
    assert sum(counts.values()) == 1109
    assert "he’s" in corpus.conversations[0].utterances[0].text


def test_real_emorynlp_dev_split() -> None:
    corpus = read_emorynlp_csv(SHARED_DATA / "emorynlp" / "emorynlp_dev_final.csv")
    assert corpus.num_utterances == 954
    assert len(corpus.conversations) == 89
    assert all(count > 0 for count in corpus.label_counts().values())


# --- MERC feature pickles ---------------------------------------------------------------

IEMOCAP_TRAIN, IEMOCAP_TEST = "Ses01F_impro01", "Ses05M_script02"


def features(count: int, dim: int, seed: int) -> list[np.ndarray]:
    """``count`` float64 vectors of dimension ``dim`` (the pickles store float64 too)."""
    return list(np.random.default_rng(seed).random((count, dim)))


def iemocap_parts() -> dict[str, Any]:
    """Two IEMOCAP dialogues, 3 utterances (train) and 2 (test); text 4-d, audio 3, visual 2."""
    sizes = {IEMOCAP_TRAIN: 3, IEMOCAP_TEST: 2}
    return {
        "videoIDs": {vid: [f"{vid}_u{i}" for i in range(n)] for vid, n in sizes.items()},
        "videoSpeakers": {IEMOCAP_TRAIN: ["M", "F", "M"], IEMOCAP_TEST: ["F", "F"]},
        "videoLabels": {IEMOCAP_TRAIN: [0, 5, 2], IEMOCAP_TEST: [3, 4]},
        "videoText": {vid: features(n, 4, 1) for vid, n in sizes.items()},
        "videoAudio": {vid: np.random.default_rng(2).random((n, 3)) for vid, n in sizes.items()},
        "videoVisual": {vid: features(n, 2, 3) for vid, n in sizes.items()},
        "videoSentence": {
            IEMOCAP_TRAIN: ["Excuse me.", "Do you have your forms?", "Yeah."],
            IEMOCAP_TEST: ["Hello.", "Hi."],
        },
        "trainVid": {IEMOCAP_TRAIN},
        "testVid": [IEMOCAP_TEST],
    }


def one_hot(index: int) -> list[int]:
    """MELD's speaker encoding: a one-hot list of length 9."""
    return [int(i == index) for i in range(9)]


def meld_parts() -> dict[str, Any]:
    """Two MELD dialogues keyed by int: 0 (train, 2 utterances) and 1 (test, 1)."""
    return {
        "videoIDs": {0: [0, 1], 1: [0]},
        "videoSpeakers": {0: [one_hot(0), one_hot(4)], 1: [one_hot(8)]},
        "videoLabels": {0: [2, 6], 1: [0]},
        "videoText": {0: features(2, 6, 4), 1: features(1, 6, 5)},
        "videoAudio": {0: features(2, 5, 6), 1: features(1, 5, 7)},
        "videoVisual": {0: features(2, 3, 8), 1: features(1, 3, 9)},
        "videoSentence": {0: ["I’m scared.", "Get out!"], 1: ["Fine."]},
        "trainVid": [0],
        "testVid": {1},
    }


IEMOCAP_ORDER = (
    "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual",
    "videoSentence", "trainVid", "testVid",
)
MELD_RNN_ORDER = (
    "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoSentence",
    "trainVid", "testVid",
)


def iemocap_tuple(parts: dict[str, Any]) -> tuple[Any, ...]:
    """The DialogueRNN/DialogueGCN IEMOCAP 9-tuple."""
    return tuple(parts[name] for name in IEMOCAP_ORDER)


def meld_gcn_tuple(parts: dict[str, Any]) -> tuple[Any, ...]:
    """The DialogueGCN/MMGCN MELD 10-tuple (last element ignored by readers)."""
    return (*(parts[name] for name in IEMOCAP_ORDER), {})


def meld_rnn_tuple(parts: dict[str, Any]) -> tuple[Any, ...]:
    """The DialogueRNN MELD 9-tuple without visual features (last element: sentiments)."""
    return (*(parts[name] for name in MELD_RNN_ORDER), {0: [0, 1], 1: [2]})


def dump(path: Path, data: Any, protocol: int = pickle.DEFAULT_PROTOCOL) -> Path:
    """Pickle ``data`` to ``path``."""
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    return path


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_iemocap_pickle_splits_and_features(tmp_path: Path, protocol: int) -> None:
    path = dump(tmp_path / "IEMOCAP_features.pkl", iemocap_tuple(iemocap_parts()), protocol)
    train = read_merc_pickle(Path(f"{path}#train"))
    test = read_merc_pickle(Path(f"{path}#test"))
    everything = read_merc_pickle(path)
    assert [c.conversation_id for c in train.conversations] == [IEMOCAP_TRAIN]
    assert [c.conversation_id for c in test.conversations] == [IEMOCAP_TEST]
    assert [c.conversation_id for c in everything.conversations] == [IEMOCAP_TRAIN, IEMOCAP_TEST]
    assert train.name == f"merc:{path}#train"
    assert train.labels == IEMOCAP_LABELS == ("hap", "sad", "neu", "ang", "exc", "fru")
    utterances = train.conversations[0].utterances
    assert [u.utterance_id for u in utterances] == [f"{IEMOCAP_TRAIN}_{i}" for i in range(3)]
    assert [u.speaker for u in utterances] == ["M", "F", "M"]
    assert [u.label for u in utterances] == ["hap", "fru", "neu"]
    assert utterances[1].text == "Do you have your forms?"
    assert everything.feature_dims() == {"text": 4, "audio": 3, "visual": 2}
    text = utterances[2].features["text"]
    assert text.dtype == np.float32
    np.testing.assert_allclose(text, iemocap_parts()["videoText"][IEMOCAP_TRAIN][2], rtol=1e-6)


def test_meld_gcn_pickle_maps_labels_and_one_hot_speakers(tmp_path: Path) -> None:
    path = dump(tmp_path / "MELD_features.pkl", meld_gcn_tuple(meld_parts()))
    corpus = read_merc_pickle(path)
    assert corpus.labels == MELD_LABELS
    first = corpus.conversations[0].utterances
    assert [u.label for u in first] == ["fear", "anger"]
    assert [u.speaker for u in first] == ["speaker0", "speaker4"]
    assert first[0].text == "I’m scared."
    assert [c.conversation_id for c in corpus.conversations] == ["0", "1"]
    assert corpus.conversations[1].utterances[0].speaker == "speaker8"
    assert corpus.feature_dims() == {"text": 6, "audio": 5, "visual": 3}
    assert corpus.label_indices().tolist() == [
        MELD_LABELS.index("fear"), MELD_LABELS.index("anger"), MELD_LABELS.index("neutral")
    ]


def test_meld_rnn_pickle_has_no_visual(tmp_path: Path) -> None:
    path = dump(tmp_path / "MELD_features_raw.pkl", meld_rnn_tuple(meld_parts()))
    corpus = read_merc_pickle(Path(f"{path}#test"))
    assert [c.conversation_id for c in corpus.conversations] == ["1"]
    assert corpus.feature_dims() == {"text": 6, "audio": 5}
    assert next(corpus.utterances()).label == "neutral"


def test_dict_pickle_uses_its_label_list(tmp_path: Path) -> None:
    parts = iemocap_parts()
    del parts["videoVisual"]
    parts["labels"] = ["calm", "angry", "happy", "sad", "tense", "bored"]
    corpus = read_merc_pickle(dump(tmp_path / "custom.pkl", parts))
    assert corpus.labels == ("calm", "angry", "happy", "sad", "tense", "bored")
    assert [u.label for u in corpus.conversations[0]] == ["calm", "bored", "happy"]
    assert corpus.feature_dims() == {"text": 4, "audio": 3}


def test_dict_pickle_without_labels_follows_speaker_encoding(tmp_path: Path) -> None:
    meld = read_merc_pickle(dump(tmp_path / "meld.pkl", meld_parts()))
    iemocap = read_merc_pickle(dump(tmp_path / "iemocap.pkl", iemocap_parts()))
    assert meld.labels == MELD_LABELS
    assert next(meld.utterances()).label == "fear"
    assert iemocap.labels == IEMOCAP_LABELS


class Marker:
    """An object whose unpickling would create ``path`` if it were ever executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], Any], tuple[str]]:
        return (os.system, (f"touch {self.path}",))


def touch(path: str) -> None:
    """Create ``path``: proof that a pickle ran code."""
    Path(path).touch()


class Payload:
    """A custom class whose reconstruction calls this module's ``touch``."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Callable[[str], None], tuple[str]]:
        return (touch, (str(self.path),))


@pytest.mark.parametrize(
    ("make", "refused"), [(Marker, r"\.system"), (Payload, r"test_data_readers\.touch")]
)
def test_pickle_with_disallowed_class_is_refused_without_running(
    tmp_path: Path, make: Callable[[Path], object], refused: str
) -> None:
    marker = tmp_path / "pwned"
    parts = iemocap_parts()
    parts["videoSentence"][IEMOCAP_TRAIN][0] = make(marker)
    path = dump(tmp_path / "evil.pkl", iemocap_tuple(parts))
    with pytest.raises(CorpusError, match=f"refuses to load class .*{refused}") as info:
        read_merc_pickle(path)
    assert info.value.source == str(path)
    assert not marker.exists()


def test_pickle_of_plain_custom_instance_is_refused(tmp_path: Path) -> None:
    path = dump(tmp_path / "custom.pkl", Utterance("u1", "A"))
    with pytest.raises(CorpusError, match=r"refuses to load class cberl_model\..*Utterance"):
        read_merc_pickle(path)


def test_pickle_ragged_feature_dims(tmp_path: Path) -> None:
    parts = iemocap_parts()
    parts["videoText"][IEMOCAP_TEST] = [np.zeros(4), np.zeros(5)]
    path = dump(tmp_path / "ragged.pkl", iemocap_tuple(parts))
    with pytest.raises(CorpusError) as info:
        read_merc_pickle(path)
    message = str(info.value)
    assert f"dialogue '{IEMOCAP_TEST}' utterance 1: text features have dimension 5" in message
    assert f"dialogue '{IEMOCAP_TRAIN}' utterance 0 has 4" in message


def test_pickle_mismatched_lengths(tmp_path: Path) -> None:
    parts = meld_parts()
    parts["videoAudio"][0] = parts["videoAudio"][0][:1]
    path = dump(tmp_path / "short.pkl", meld_gcn_tuple(parts))
    expected = "dialogue 0: videoLabels has 2 entries but videoAudio has 1"
    with pytest.raises(CorpusError, match=expected):
        read_merc_pickle(path)


def test_pickle_unknown_label_index(tmp_path: Path) -> None:
    parts = iemocap_parts()
    parts["videoLabels"][IEMOCAP_TEST] = [3, 6]
    path = dump(tmp_path / "labels.pkl", iemocap_tuple(parts))
    with pytest.raises(
        CorpusError, match=f"dialogue '{IEMOCAP_TEST}' utterance 1: unknown label index 6"
    ):
        read_merc_pickle(path)


def test_pickle_empty_dialogue(tmp_path: Path) -> None:
    parts = meld_parts()
    for key in ("videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio",
                "videoVisual", "videoSentence"):
        parts[key][1] = []
    path = dump(tmp_path / "empty.pkl", meld_gcn_tuple(parts))
    assert read_merc_pickle(Path(f"{path}#train")).num_utterances == 2
    with pytest.raises(CorpusError, match="dialogue 1 is empty"):
        read_merc_pickle(Path(f"{path}#test"))


def test_pickle_unknown_split(tmp_path: Path) -> None:
    path = dump(tmp_path / "x.pkl", iemocap_tuple(iemocap_parts()))
    with pytest.raises(CorpusError, match="unknown split 'dev'; expected one of train, test, all"):
        read_merc_pickle(Path(f"{path}#dev"))


def test_pickle_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="file not found") as info:
        read_merc_pickle(Path(f"{tmp_path / 'absent.pkl'}#train"))
    assert info.value.source == str(tmp_path / "absent.pkl")


def test_not_a_pickle_lists_accepted_layouts(tmp_path: Path) -> None:
    path = meld_csv(tmp_path, [meld_row(0, 0, "Hi.", "joy")])
    with pytest.raises(CorpusError, match="not a readable pickle.*accepted layouts: IEMOCAP"):
        read_merc_pickle(path)


@pytest.mark.parametrize(
    "data",
    [
        (1, 2, 3),
        {"videoIDs": {}},
        tuple(range(9)),
        ["not", "a", "layout"],
    ],
)
def test_unrecognised_layout(tmp_path: Path, data: Any) -> None:
    path = dump(tmp_path / "odd.pkl", data)
    with pytest.raises(CorpusError, match="unrecognised MERC pickle layout.*accepted layouts"):
        read_merc_pickle(path)


# --- JSONL ------------------------------------------------------------------------------


def write_lines(path: Path, lines: list[Any]) -> Path:
    """Write one line per item: dicts as JSON, strings verbatim."""
    text = "".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines)
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_round_trip_keeps_everything(tmp_path: Path) -> None:
    vector = np.array([0.1, -2.5, 3.25], dtype=np.float32)
    corpus = Corpus(
        name="test",
        labels=("calm", "angry"),
        conversations=[
            Conversation("call-1", [
                Utterance("c1-a", "agent", "Hello, how’s it going?", "calm",
                          {"audio": vector, "text": vector[:2]}, 0, 1200),
                Utterance("c1-b", "caller", None, None, {"audio": vector * 2, "text": vector[1:]}),
            ]),
            Conversation("call-0", [Utterance("c0-a", "caller", "No!", "angry",
                                              {"audio": vector, "text": vector[:2]})]),
        ],
    )
    path = tmp_path / "out.jsonl"
    write_jsonl(corpus, path)
    back = read_jsonl(path)
    assert back.content_hash() == corpus.content_hash()
    assert back.labels == ("calm", "angry")
    assert [c.conversation_id for c in back.conversations] == ["call-1", "call-0"]
    first = back.conversations[0].utterances[0]
    assert (first.start_ms, first.end_ms, first.text) == (0, 1200, "Hello, how’s it going?")
    assert back.feature_dims() == {"audio": 3, "text": 2}
    assert json.loads(path.read_text(encoding="utf-8").splitlines()[0]) == {
        "labels": ["calm", "angry"]
    }


def test_jsonl_round_trip_of_meld_pickle(tmp_path: Path) -> None:
    corpus = read_merc_pickle(dump(tmp_path / "m.pkl", meld_gcn_tuple(meld_parts())))
    write_jsonl(corpus, tmp_path / "m.jsonl")
    assert read_jsonl(tmp_path / "m.jsonl").content_hash() == corpus.content_hash()


def test_jsonl_header_sets_label_order_and_defaults_ids(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "calls.jsonl", [
        "",
        {"labels": ["happy", "angry", "neutral"]},
        {"conversation_id": "b", "speaker": "agent", "label": "neutral"},
        "   ",
        {"conversation_id": "a", "speaker": "caller", "label": "angry", "audio": "a.wav"},
        {"conversation_id": "b", "speaker": "caller", "utterance_id": "b-x"},
        {"conversation_id": "b", "speaker": "agent", "text": "Bye", "label": "happy"},
    ])
    corpus = read_jsonl(path)
    assert corpus.labels == ("happy", "angry", "neutral")
    assert corpus.name == f"jsonl:{path}"
    assert [c.conversation_id for c in corpus.conversations] == ["b", "a"]
    assert [u.utterance_id for u in corpus.conversations[0]] == ["b_0", "b-x", "b_2"]
    assert corpus.label_indices().tolist() == [2, -1, 0, 1]


def test_jsonl_without_header_uses_meld_labels(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "m.jsonl", [
        {"conversation_id": "d", "speaker": "Joey", "label": "disgust"},
        {"conversation_id": "d", "speaker": "Ross", "label": "fear"},
    ])
    corpus = read_jsonl(path)
    assert corpus.labels == MELD_LABELS
    assert corpus.label_counts()["disgust"] == 1


BASE = {"conversation_id": "c", "speaker": "s"}


@pytest.mark.parametrize(
    ("lines", "row", "fragment"),
    [
        ([BASE, "{not json"], 2, "invalid JSON"),
        ([BASE, "", {"conversation_id": "c"}], 3, "speaker: Field required"),
        ([BASE, {**BASE, "speaker": 7}], 2, "speaker: Input should be a valid string"),
        ([BASE, {**BASE, "start_ms": 10, "end_ms": 5}], 2, "end_ms 5 is before start_ms 10"),
        ([BASE, {**BASE, "labels": ["x"]}], 2, "labels: Extra inputs are not permitted"),
        ([{"labels": ["a", "b"]}, {**BASE, "label": "c"}], 2, "unknown label 'c'"),
        ([{"labels": ["a", "a"]}, BASE], 1, "repeated label(s) a"),
        ([BASE, {**BASE, "label": "angry"}], 2, "a header line"),
        ([{**BASE, "utterance_id": "u"}, {**BASE, "utterance_id": "u"}], 2,
         "utterance_id 'u' already used on line 1"),
        ([BASE, {**BASE, "features": {"smell": [1.0]}}], 2, "unknown modality 'smell'"),
        ([BASE, {**BASE, "features": {"audio": []}}], 2, "features.audio"),
        ([{**BASE, "features": {"audio": [1, 2]}}, {**BASE, "features": {"audio": [1.0]}}], 2,
         "audio features have dimension 1, line 1 has 2"),
    ],
)
def test_jsonl_errors_name_file_and_line(
    tmp_path: Path, lines: list[Any], row: int, fragment: str
) -> None:
    path = write_lines(tmp_path / "bad.jsonl", lines)
    with pytest.raises(CorpusError) as info:
        read_jsonl(path)
    assert info.value.row == row
    assert str(info.value).startswith(f"{path}, row {row}:")
    assert fragment in str(info.value)


@pytest.mark.parametrize("lines", [[], ["", "  "], [{"labels": ["a"]}, ""]])
def test_jsonl_without_utterances_is_an_error(tmp_path: Path, lines: list[Any]) -> None:
    path = write_lines(tmp_path / "empty.jsonl", lines)
    with pytest.raises(CorpusError, match="no utterances"):
        read_jsonl(path)


def test_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="file not found"):
        read_jsonl(tmp_path / "absent.jsonl")


def test_write_jsonl_refuses_non_finite_features(tmp_path: Path) -> None:
    utterance = Utterance("u", "s", features={"audio": np.array([np.nan], dtype=np.float32)})
    corpus = Corpus("nan", MELD_LABELS, [Conversation("c", [utterance])])
    with pytest.raises(CorpusError, match="utterance 'u' cannot be written"):
        write_jsonl(corpus, tmp_path / "nan.jsonl")
    assert not (tmp_path / "nan.jsonl").exists()


# --- registry ---------------------------------------------------------------------------


def test_load_corpus_dispatches_on_format(tmp_path: Path) -> None:
    meld = meld_csv(tmp_path, [meld_row(0, 0, "Hi.", "joy")])
    emory = emory_csv(tmp_path, [emory_row(1, 0, "Hi.", "Peaceful", "['A']")])
    jsonl = write_lines(tmp_path / "c.jsonl", [{**BASE, "label": "joy"}])
    merc = dump(tmp_path / "m.pkl", iemocap_tuple(iemocap_parts()))
    assert load_corpus(f"meld:{meld}").name == f"meld:{meld}"
    assert next(load_corpus(f"emorynlp:{emory}").utterances()).label == "peaceful"
    assert load_corpus(f"JSONL:{jsonl}").labels == MELD_LABELS
    assert load_corpus(f"merc:{merc}#test").num_utterances == 2
    assert load_corpus(f"merc:{merc}").num_utterances == 5


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("csv:data.csv", "unknown corpus format 'csv'; known: meld, emorynlp, jsonl, merc"),
        ("data.csv", "expected FORMAT:PATH"),
        ("meld:", "expected FORMAT:PATH"),
    ],
)
def test_load_corpus_rejects_bad_specs(spec: str, fragment: str) -> None:
    with pytest.raises(CorpusError) as info:
        load_corpus(spec)
    assert fragment in str(info.value)
