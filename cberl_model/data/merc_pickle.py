"""Reader for the MERC feature pickles the research community distributes.

DialogueRNN, DialogueGCN and MMGCN ship IEMOCAP and MELD as pickles of per-dialogue dicts
(``videoIDs``, ``videoSpeakers``, ``videoLabels``, ``videoText``, ...) plus the official
train/test dialogue ids. Reading them lets the model train on the same pre-computed
features the published baselines used, so results are comparable.

A pickle can run arbitrary code when loaded, and these files come from download links, so
they are read with :class:`_RestrictedUnpickler`, which only reconstructs numpy arrays,
numpy scalars and builtin containers.

Which dataset a file holds (and so its label set) is decided as follows:

* Tuple layouts are dataset-specific, so the layout decides. A 10-tuple is MELD
  (DialogueGCN/MMGCN). A 9-tuple whose element 6 is a dict (``videoSentence``) is IEMOCAP;
  one whose element 6 is a collection of ids (``trainVid``) is MELD without visual features
  (DialogueRNN).
* A dict layout uses its ``labels`` key when present. Otherwise the speaker encoding
  decides: one-hot vectors are MELD's encoding, speaker names ('M'/'F') are IEMOCAP's. The
  largest label index cannot decide on its own, because a MELD subset may use only the
  first six classes.

Label indices are then checked against the chosen label set.
"""

from __future__ import annotations

import codecs
import pickle
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from cberl_model.data.conversation import Conversation, Corpus, CorpusError, Utterance
from cberl_model.data.meld import MELD_LABELS

IEMOCAP_LABELS: tuple[str, ...] = ("hap", "sad", "neu", "ang", "exc", "fru")
"""IEMOCAP's six classes in the pickles' index order (also the corpus label set)."""

MELD_PICKLE_ORDER: tuple[str, ...] = (
    "neutral", "surprise", "fear", "sadness", "joy", "disgust", "anger",
)
"""MELD label names by pickle index; the corpus uses MELD_LABELS' order instead so that
models trained on MELD CSVs and on MELD pickles share class indices."""

SPLITS: tuple[str, ...] = ("train", "test", "all")
"""Split names accepted after ``#`` in the path."""

_IEMOCAP_FIELDS = (
    "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoVisual",
    "videoSentence", "trainVid", "testVid",
)
_MELD_GCN_FIELDS = (*_IEMOCAP_FIELDS, None)
_MELD_RNN_FIELDS = (
    "videoIDs", "videoSpeakers", "videoLabels", "videoText", "videoAudio", "videoSentence",
    "trainVid", "testVid", None,
)
_REQUIRED_KEYS = ("videoIDs", "videoSpeakers", "videoLabels", "trainVid", "testVid")
_SPLIT_KEYS = ("trainVid", "testVid")
_MODALITY_KEYS = {"text": "videoText", "audio": "videoAudio", "visual": "videoVisual"}
_PER_UTTERANCE_KEYS = ("videoIDs", "videoSpeakers", *_MODALITY_KEYS.values(), "videoSentence")

_ACCEPTED = (
    "accepted layouts: IEMOCAP 9-tuple (videoIDs, videoSpeakers, videoLabels, videoText, "
    "videoAudio, videoVisual, videoSentence, trainVid, testVid); MELD 10-tuple (the same "
    "plus one ignored element); MELD 9-tuple without visual (videoIDs, videoSpeakers, "
    "videoLabels, videoText, videoAudio, videoSentence, trainVid, testVid, ignored); or a "
    "dict with those key names and an optional 'labels' list"
)

# numpy's private constructors are taken from numpy's own pickling so that numpy 1 module
# paths (numpy.core) and numpy 2 paths (numpy._core) both resolve to the installed ones.
_NUMPY_RECONSTRUCT: Callable[..., Any] = np.zeros(0).__reduce__()[0]
_NUMPY_SCALAR: Callable[..., Any] = np.float32(0).__reduce__()[0]
_NUMPY_FROMBUFFER: Callable[..., Any] = np.zeros(1).__reduce_ex__(5)[0]

_SAFE_GLOBALS: dict[tuple[str, str], Any] = {
    **{
        (f"numpy.{core}.multiarray", name): func
        for core in ("core", "_core")
        for name, func in (("_reconstruct", _NUMPY_RECONSTRUCT), ("scalar", _NUMPY_SCALAR))
    },
    # Protocol 5 pickles of contiguous arrays.
    **{
        (f"numpy.{core}.numeric", "_frombuffer"): _NUMPY_FROMBUFFER
        for core in ("core", "_core")
    },
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Python 3 pickles with protocol <= 2 store bytes (array buffers) via _codecs.encode.
    ("_codecs", "encode"): codecs.encode,
    **{
        (module, t.__name__): t
        for module in ("builtins", "__builtin__")
        for t in (set, frozenset, list, dict, tuple)
    },
    ("collections", "OrderedDict"): OrderedDict,
}
"""Everything a MERC pickle may reference; ``__builtin__`` is Python 2's name for builtins
(the IEMOCAP pickles were written by Python 2)."""


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals in ``_SAFE_GLOBALS``.

    Loading a pickle calls whatever callables it names; refusing every name outside the
    allow-list means a malicious file fails before any of its code runs.
    """

    def __init__(self, handle: BinaryIO, source: str) -> None:
        super().__init__(handle, encoding="latin1")
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        """Return the allowed global, or raise CorpusError for anything else."""
        try:
            return _SAFE_GLOBALS[module, name]
        except KeyError:
            raise CorpusError(
                self._source,
                f"the MERC reader refuses to load class {module}.{name}: feature pickles "
                "may hold only numpy arrays and builtin containers",
            ) from None


@dataclass(frozen=True)
class _Scheme:
    """How label indices map to names, and the corpus label set."""

    dataset: str
    index_names: tuple[str, ...]
    label_set: tuple[str, ...]


_IEMOCAP = _Scheme("IEMOCAP", IEMOCAP_LABELS, IEMOCAP_LABELS)
_MELD = _Scheme("MELD", MELD_PICKLE_ORDER, MELD_LABELS)


def read_merc_pickle(path: Path) -> Corpus:
    """Read a MERC feature pickle (optionally ``PATH#SPLIT``) into a corpus.

    Each utterance gets ``text``/``audio``/``visual`` features (float32 vectors) for the
    modalities the layout carries, its transcript from ``videoSentence``, the id
    ``{dialogue}_{index}``, and the speaker name ('M'/'F') or ``speaker{k}`` for a one-hot
    speaker vector with its 1 at ``k``.

    Args:
        path: The pickle, optionally suffixed ``#train``, ``#test`` or ``#all`` (default).

    Raises:
        CorpusError: If the file is missing, is not a pickle, references a class outside
            the allow-list, has an unrecognised layout, or holds inconsistent dialogues
            (unknown label index, empty dialogue, lengths or feature dimensions that
            disagree); the message names the file and, where relevant, the dialogue.
    """
    file, split = _split_spec(str(path))
    source = str(file)
    fields, scheme = _fields(_unpickle(file, source), source)
    reader = _DialogueReader(source, fields, scheme)
    conversations = [reader.conversation(vid) for vid in _dialogue_ids(source, fields, split)]
    return Corpus(name=f"merc:{path}", labels=scheme.label_set, conversations=conversations)


def _split_spec(spec: str) -> tuple[Path, str]:
    """Split ``PATH#SPLIT`` into the file and the split name (``all`` when absent)."""
    if "#" not in spec:
        return Path(spec), "all"
    file, split = spec.rsplit("#", 1)
    if split not in SPLITS:
        raise CorpusError(file, f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return Path(file), split


def _unpickle(file: Path, source: str) -> Any:
    """Load the file with the restricted unpickler, turning any failure into CorpusError."""
    if not file.is_file():
        raise CorpusError(source, "file not found")
    with file.open("rb") as handle:
        try:
            return _RestrictedUnpickler(handle, source).load()
        except CorpusError:
            raise
        except Exception as exc:  # arbitrary bytes make the unpickler raise nearly anything
            raise CorpusError(
                source, f"not a readable pickle ({type(exc).__name__}: {exc}); {_ACCEPTED}"
            ) from exc


def _fields(data: Any, source: str) -> tuple[dict[str, Any], _Scheme]:
    """Name the pickle's parts by layout and decide which dataset it holds."""
    if isinstance(data, Mapping):
        return _dict_fields(data, source)
    if isinstance(data, (tuple, list)):
        return _tuple_fields(data, source)
    raise CorpusError(
        source, f"unrecognised MERC pickle layout ({type(data).__name__}); {_ACCEPTED}"
    )


def _tuple_fields(
    data: tuple[Any, ...] | list[Any], source: str
) -> tuple[dict[str, Any], _Scheme]:
    """Map a DialogueRNN/DialogueGCN tuple to field names; the layout fixes the dataset."""
    if len(data) == 10:
        names, scheme = _MELD_GCN_FIELDS, _MELD
    elif len(data) == 9 and isinstance(data[6], Mapping):
        names, scheme = _IEMOCAP_FIELDS, _IEMOCAP
    elif len(data) == 9:
        names, scheme = _MELD_RNN_FIELDS, _MELD
    else:
        raise CorpusError(
            source, f"unrecognised MERC pickle layout (a sequence of {len(data)}); {_ACCEPTED}"
        )
    fields = {name: value for name, value in zip(names, data, strict=True) if name is not None}
    _check_field_types(fields, source)
    return fields, scheme


def _dict_fields(data: Mapping[Any, Any], source: str) -> tuple[dict[str, Any], _Scheme]:
    """Take the known keys of a dict layout; ``labels`` or the speakers fix the dataset."""
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise CorpusError(
            source,
            f"unrecognised MERC pickle layout (dict lacks {', '.join(missing)}); {_ACCEPTED}",
        )
    keys = (*_PER_UTTERANCE_KEYS, "videoLabels", *_SPLIT_KEYS)
    fields = {key: data[key] for key in keys if key in data}
    _check_field_types(fields, source)
    if "labels" in data:
        names = _label_names(data["labels"], source)
        return fields, _Scheme("the file's", names, names)
    return fields, _scheme_from_speakers(fields["videoSpeakers"])


def _check_field_types(fields: dict[str, Any], source: str) -> None:
    """Require per-dialogue dicts and id collections where the layout says they are."""
    for name, value in fields.items():
        expected = (set, frozenset, list, tuple) if name in _SPLIT_KEYS else Mapping
        if not isinstance(value, expected):
            raise CorpusError(
                source,
                f"unrecognised MERC pickle layout ({name} is a {type(value).__name__}); "
                f"{_ACCEPTED}",
            )


def _label_names(raw: Any, source: str) -> tuple[str, ...]:
    """Validate a dict layout's ``labels`` list: distinct, non-empty names."""
    if (
        not isinstance(raw, (list, tuple))
        or not raw
        or not all(isinstance(name, str) and name for name in raw)
        or len(set(raw)) != len(raw)
    ):
        raise CorpusError(source, f"'labels' must be a list of distinct label names, got {raw!r}")
    return tuple(raw)


def _scheme_from_speakers(speakers: Mapping[Any, Any]) -> _Scheme:
    """One-hot speaker vectors are MELD's encoding; speaker names are IEMOCAP's."""
    for turns in speakers.values():
        if isinstance(turns, (list, tuple, np.ndarray)) and len(turns):
            return _IEMOCAP if isinstance(turns[0], str) else _MELD
    return _MELD


def _dialogue_ids(source: str, fields: dict[str, Any], split: str) -> list[Any]:
    """Dialogue ids of the split, in ``videoIDs`` order (sets have no stable order)."""
    order = list(fields["videoIDs"])
    if split == "all":
        wanted = order
    else:
        chosen = set(fields[f"{split}Vid"])
        unknown = chosen.difference(order)
        if unknown:
            raise CorpusError(
                source,
                f"{split}Vid lists dialogue(s) missing from videoIDs: "
                f"{', '.join(sorted(map(repr, unknown)))}",
            )
        wanted = [vid for vid in order if vid in chosen]
    if not wanted:
        raise CorpusError(source, f"split {split!r} has no dialogues")
    return wanted


@dataclass
class _DialogueReader:
    """Builds conversations from one pickle's fields, remembering feature dimensions.

    Attributes:
        source: The file, for error messages.
        fields: The pickle's parts by name (``videoLabels``, ``videoText``, ...).
        scheme: How label indices map to names.
        dims: Per modality, the first dimension seen and the utterance it came from, so a
            ragged file is reported with both utterances.
    """

    source: str
    fields: dict[str, Any]
    scheme: _Scheme
    dims: dict[str, tuple[int, str]] = field(default_factory=dict)

    def conversation(self, vid: Any) -> Conversation:
        """Build one dialogue after checking that its per-utterance lists line up."""
        labels = self._entry("videoLabels", vid)
        if not len(labels):
            raise CorpusError(self.source, f"dialogue {vid!r} is empty")
        columns = {key: self._entry(key, vid) for key in _PER_UTTERANCE_KEYS if key in self.fields}
        for key, column in columns.items():
            if len(column) != len(labels):
                raise CorpusError(
                    self.source,
                    f"dialogue {vid!r}: videoLabels has {len(labels)} entries "
                    f"but {key} has {len(column)}",
                )
        row = [{key: column[i] for key, column in columns.items()} for i in range(len(labels))]
        return Conversation(
            str(vid),
            [self._utterance(vid, i, label, row[i]) for i, label in enumerate(labels)],
        )

    def _entry(self, key: str, vid: Any) -> Any:
        """The per-utterance list of one dialogue in one field."""
        try:
            entry = self.fields[key][vid]
        except KeyError:
            raise CorpusError(self.source, f"dialogue {vid!r} is missing from {key}") from None
        if isinstance(entry, (str, bytes)) or not isinstance(entry, (Collection, np.ndarray)):
            raise CorpusError(
                self.source,
                f"dialogue {vid!r}: {key} must be a per-utterance list, "
                f"got {type(entry).__name__}",
            )
        return entry

    def _utterance(self, vid: Any, index: int, label: Any, row: dict[str, Any]) -> Utterance:
        """Build utterance ``index`` of dialogue ``vid`` from its entries in each field."""
        where = f"dialogue {vid!r} utterance {index}"
        sentence = row.get("videoSentence")
        if sentence is not None and not isinstance(sentence, str):
            raise CorpusError(
                self.source, f"{where}: videoSentence must be a string, got {sentence!r}"
            )
        return Utterance(
            utterance_id=f"{vid}_{index}",
            speaker=self._speaker(where, row["videoSpeakers"]),
            text=sentence,
            label=self._label(where, label),
            features={
                modality: self._vector(where, modality, row[key])
                for modality, key in _MODALITY_KEYS.items()
                if key in row
            },
        )

    def _speaker(self, where: str, raw: Any) -> str:
        """A speaker name as is, or ``speaker{argmax}`` for a one-hot vector."""
        if isinstance(raw, str):
            return raw
        vector = _numeric_vector(raw)
        if vector is None:
            raise CorpusError(
                self.source, f"{where}: speaker must be a name or a one-hot vector, got {raw!r}"
            )
        return f"speaker{int(vector.argmax())}"

    def _label(self, where: str, raw: Any) -> str:
        """Map a label index to its name under the dataset's scheme."""
        names = self.scheme.index_names
        is_index = isinstance(raw, (int, np.integer)) and not isinstance(raw, bool)
        if is_index and 0 <= raw < len(names):
            return names[int(raw)]
        raise CorpusError(
            self.source,
            f"{where}: unknown label index {raw!r}; {self.scheme.dataset} labels are "
            f"0..{len(names) - 1} ({', '.join(names)})",
        )

    def _vector(self, where: str, modality: str, raw: Any) -> np.ndarray:
        """A float32 feature vector, checked against the modality's first dimension."""
        try:
            vector = np.asarray(raw, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise CorpusError(
                self.source, f"{where}: {modality} features are not numeric ({exc})"
            ) from exc
        if vector.ndim != 1:
            raise CorpusError(
                self.source,
                f"{where}: {modality} features must be a vector, got shape {vector.shape}",
            )
        dim, first = self.dims.setdefault(modality, (vector.shape[0], where))
        if vector.shape[0] != dim:
            raise CorpusError(
                self.source,
                f"{where}: {modality} features have dimension {vector.shape[0]}, "
                f"but {first} has {dim}",
            )
        return vector


def _numeric_vector(raw: Any) -> np.ndarray | None:
    """``raw`` as a non-empty numeric 1-D array, or ``None`` when it is not one."""
    try:
        vector = np.asarray(raw)
    except ValueError:  # ragged nested lists
        return None
    if vector.ndim == 1 and vector.size and np.issubdtype(vector.dtype, np.number):
        return vector
    return None
