"""The token vocabulary shared by model, streamer and training.

A MidiTok REMI tokenizer (all programs in one stream, tempo, time signature and velocity tokens) plus
condition tokens `Genre_<name>` / `Mood_<name>`. The genre and mood lists are data, saved in the tokenizer
JSON; `any` is a label ("this source says nothing about it"). Vocabularies made since the null token was
added also hold `Genre_null` / `Mood_null`: "no condition", what training drops labels to and what
classifier-free guidance's unconditioned row reads (older ones use `any` for that). Every sequence opens
with a conditioning block (genre, mood) and may carry another right before any `Bar` token, meaning "from
this bar on".
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from model.errors import MoodstreamError

log = logging.getLogger(__name__)

ANY = "any"
NULL = "null"  # the condition-dropout token: never a label, never chosen by a user
# Our taxonomy (training/labels.json maps every source's labels to these; funk = funk/soul/R&B/disco/gospel).
# Real files back each genre except blues, latin and electronic, which lean on generated arrangements.
DEFAULT_GENRES = ("pop", "rock", "jazz", "latin", "blues", "country", "folk", "funk", "hiphop", "electronic",
                  "classical", "game")
# Valence/arousal quadrants: happy (+v +a), tense (-v +a), sad (-v -a), calm (+v -a).
DEFAULT_MOODS = ("happy", "tense", "sad", "calm")
OPPOSITE_MOODS = {"happy": "sad", "sad": "happy", "tense": "calm", "calm": "tense"}  # both signs flipped
# what guidance's second row reads for the mood: no mood (`null_ids`) or the opposite one (`contrast_ids`)
MOOD_NEGATIVES = ("null", "opposite")

TIME_SIGNATURES = {8: [3, 6, 12], 4: [2, 3, 4, 5, 6]}


@dataclass(frozen=True)
class Conditions:
    """What the music should be: one genre and one mood name (`any` = unconditioned)."""

    genre: str = ANY
    mood: str = ANY


def _tokenizer_config(genres: Sequence[str], moods: Sequence[str], null: bool):
    from miditok import TokenizerConfig

    return TokenizerConfig(
        pitch_range=(21, 109),
        beat_res={(0, 4): 8, (4, 12): 4},  # 1/32-note grid in the first 4 beats of a duration
        num_velocities=16,
        use_programs=True,
        one_token_stream_for_programs=True,
        use_tempos=True,
        num_tempos=32,
        tempo_range=(40, 250),
        use_time_signatures=True,
        time_signature_range=TIME_SIGNATURES,
        use_chords=False,
        use_rests=False,
        use_sustain_pedals=False,
        use_pitch_bends=False,
        additional_params={"moodstream": {"genres": list(genres), "moods": list(moods), "null": null}},
    )


def _validate_names(kind: str, names: Sequence[str]) -> tuple[str, ...]:
    cleaned = []
    for name in names:
        if not name or not name.replace("_", "").replace("-", "").isalnum() or name != name.lower():
            raise MoodstreamError(f"invalid {kind} name {name!r}: use lower-case letters, digits, '-' or '_'")
        if name == NULL:
            raise MoodstreamError(f"invalid {kind} name {name!r}: {NULL!r} is the condition-dropout token")
        if name != ANY and name not in cleaned:
            cleaned.append(name)
    return (ANY, *cleaned)


class Vocab:
    """REMI tokenizer + condition tokens. Works on token ids; decode goes back to symusic scores."""

    def __init__(self, tokenizer, genres: Sequence[str], moods: Sequence[str], null: bool = False):
        self.tokenizer = tokenizer
        self.genres = _validate_names("genre", genres)  # ("any", ...)
        self.moods = _validate_names("mood", moods)
        self.has_null = null
        for token in self.condition_tokens():
            if token not in tokenizer.vocab:
                tokenizer.add_to_vocab(token)
        self.token_to_id: dict[str, int] = dict(tokenizer.vocab)
        self.id_to_token: list[str] = [""] * len(self.token_to_id)
        for token, i in self.token_to_id.items():
            self.id_to_token[i] = token
        self.bar_id = self.token_to_id["Bar_None"]
        self.pad_id = self.token_to_id["PAD_None"]
        self.genre_ids = {g: self.token_to_id[f"Genre_{g}"] for g in self.genres}
        self.mood_ids = {m: self.token_to_id[f"Mood_{m}"] for m in self.moods}
        self._genre_by_id = {i: g for g, i in self.genre_ids.items()}
        self._mood_by_id = {i: m for m, i in self.mood_ids.items()}
        # "no condition": its own tokens where the vocabulary has them, else `any` (older vocabularies)
        self.null_genre_id = self.token_to_id[f"Genre_{NULL}"] if null else self.genre_ids[ANY]
        self.null_mood_id = self.token_to_id[f"Mood_{NULL}"] if null else self.mood_ids[ANY]
        self._genre_by_id.setdefault(self.null_genre_id, NULL)
        self._mood_by_id.setdefault(self.null_mood_id, NULL)
        self._position_value = {i: int(t.split("_", 1)[1]) for t, i in self.token_to_id.items()
                                if t.startswith("Position_")}
        self._tempo_ids = frozenset(i for t, i in self.token_to_id.items() if t.startswith("Tempo_"))

    # ---- construction and persistence -------------------------------------------------------------
    @classmethod
    def create(cls, genres: Sequence[str] = DEFAULT_GENRES, moods: Sequence[str] = DEFAULT_MOODS,
               null: bool = True) -> "Vocab":
        from miditok import REMI

        genres, moods = _validate_names("genre", genres), _validate_names("mood", moods)
        return cls(REMI(_tokenizer_config(genres, moods, null)), genres, moods, null)

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        """Load a vocabulary JSON (written by `save`); errors name the file."""
        from miditok import REMI

        path = Path(path)
        params = read_vocab_json(path)
        try:
            tokenizer = REMI(params=path)
        except Exception as err:  # MidiTok raises assorted errors on bad files
            raise MoodstreamError(f"{path}: not a valid tokenizer file ({err})") from err
        names = _moodstream_params(params)
        return cls(tokenizer, names["genres"], names["moods"], bool(names.get("null", False)))

    def save(self, path: str | Path) -> None:
        """Write the tokenizer JSON (genre and mood lists included) atomically."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        self.tokenizer.save(tmp)
        tmp.replace(path)

    def __len__(self) -> int:
        return len(self.id_to_token)

    @property
    def vocab_size(self) -> int:
        return len(self.id_to_token)

    def fingerprint(self) -> list[str]:
        """The id → token table; equal fingerprints mean interchangeable vocabularies."""
        return list(self.id_to_token)

    # ---- conditions ------------------------------------------------------------------------------
    def condition_tokens(self) -> list[str]:
        null = [f"Genre_{NULL}", f"Mood_{NULL}"] if self.has_null else []
        return [f"Genre_{g}" for g in self.genres] + [f"Mood_{m}" for m in self.moods] + null

    def check(self, conditions: Conditions) -> Conditions:
        """Return `conditions` if both names are known, else raise an error that lists the valid ones."""
        if conditions.genre not in self.genre_ids:
            raise MoodstreamError(f"unknown genre {conditions.genre!r}; valid genres: {', '.join(self.genres)}")
        if conditions.mood not in self.mood_ids:
            raise MoodstreamError(f"unknown mood {conditions.mood!r}; valid moods: {', '.join(self.moods)}")
        return conditions

    def condition_ids(self, conditions: Conditions) -> list[int]:
        """The conditioning block for `conditions`: [Genre_x, Mood_y]."""
        self.check(conditions)
        return [self.genre_ids[conditions.genre], self.mood_ids[conditions.mood]]

    def null_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` with every condition token made the null condition of its axis (the unconditioned reading)."""
        return [self.null_genre_id if i in self._genre_by_id else self.null_mood_id if i in self._mood_by_id else i
                for i in ids]

    def contrast_ids(self, ids: Iterable[int]) -> list[int]:
        """`ids` as `null_ids` makes them, except each mood becomes its opposite quadrant's mood
        (`OPPOSITE_MOODS`: happy ↔ sad, tense ↔ calm) where the vocabulary has it: guided against that row,
        the mood is pushed away from its opposite rather than from no mood."""
        ids = list(ids)
        opposite = {self.mood_ids[m]: self.mood_ids[o] for m, o in OPPOSITE_MOODS.items()
                    if m in self.mood_ids and o in self.mood_ids}
        return [opposite.get(i, n) for i, n in zip(ids, self.null_ids(ids))]

    def is_genre(self, token_id: int) -> bool:
        return token_id in self._genre_by_id

    def is_mood(self, token_id: int) -> bool:
        return token_id in self._mood_by_id

    def is_condition(self, token_id: int) -> bool:
        return token_id in self._genre_by_id or token_id in self._mood_by_id

    def conditions_at_bar(self, ids: Sequence[int], bar_index: int) -> Conditions:
        """The conditions in force at bar `bar_index` (0-based) of `ids`: the last blocks at or before it."""
        genre, mood = ANY, ANY
        next_genre, next_mood = genre, mood  # a block takes effect at the Bar that follows it
        bar = -1
        for token_id in ids:
            if token_id == self.bar_id:
                bar += 1
                if bar > bar_index:
                    break
                genre, mood = next_genre, next_mood
            elif token_id in self._genre_by_id:
                next_genre = self._genre_by_id[token_id]
            elif token_id in self._mood_by_id:
                next_mood = self._mood_by_id[token_id]
        if bar < bar_index:
            raise IndexError(f"bar {bar_index} out of range: the sequence has {bar + 1} bars")
        return Conditions(genre, mood)

    # ---- bars ------------------------------------------------------------------------------------
    def split_bars(self, ids: Sequence[int]) -> list[list[int]]:
        """Split a token stream into bars. Each bar starts at its `Bar` token, preceded by the
        conditioning block that stands right before it (if any); tokens before the first bar that are
        not conditions are dropped."""
        bars: list[list[int]] = []
        pending: list[int] = []  # condition tokens waiting for their Bar
        for token_id in ids:
            if self.is_condition(token_id):
                pending.append(token_id)
            elif token_id == self.bar_id:
                bars.append([*pending, token_id])
                pending = []
            elif bars:
                if pending:  # a condition block not followed by Bar: keep it in order inside the bar
                    bars[-1].extend(pending)
                    pending = []
                bars[-1].append(token_id)
        return bars

    def strip_conditions(self, ids: Iterable[int]) -> list[int]:
        return [i for i in ids if not self.is_condition(i)]

    def last_tempo(self, ids: Sequence[int]) -> float | None:
        """The bpm of the last Tempo token in `ids`, or None (a bar decoded alone forgets its tempo)."""
        for token_id in reversed(ids):
            token = self.id_to_token[token_id]
            if token.startswith("Tempo_"):
                return float(token.split("_", 1)[1])
        return None

    # ---- MIDI ↔ tokens ---------------------------------------------------------------------------
    def encode(self, score, conditions: Conditions = Conditions()) -> list[int]:
        """Tokenize a symusic Score (or a MIDI path) behind a conditioning block."""
        if not hasattr(score, "tracks"):
            score = load_score(score)
        seq = self.tokenizer.encode(score)
        ids = seq.ids if hasattr(seq, "ids") else seq[0].ids
        return self.condition_ids(conditions) + self.merge_repeated_positions(ids)

    def merge_repeated_positions(self, ids: Sequence[int]) -> list[int]:
        """`ids` with every `Position` token that repeats the bar's current position removed (its notes
        join that position's), and a `Tempo` right after such a repeat moved up behind the position's
        first `Position` (replacing a Tempo already there: the later one is the tempo MidiTok decodes).

        MidiTok writes such repeats for some multi-track files (`Position_28 … notes … Position_28 …`);
        they spell the same notes as the merged form, which is the only form the grammar accepts
        (positions strictly increase inside a bar, so a bar always ends)."""
        bar_id = self.bar_id
        out: list[int] = []
        position, position_at = -1, -1  # current position in the bar, and where its Position sits in `out`
        moving_tempo = False  # the previous token was a dropped repeat: a Tempo now moves up
        for token_id in ids:
            if token_id == bar_id:
                position = -1
            elif token_id in self._position_value:
                value = self._position_value[token_id]
                if value == position:
                    moving_tempo = True
                    continue
                position, position_at = value, len(out)
            elif moving_tempo and token_id in self._tempo_ids:
                moving_tempo = False
                after = position_at + 1
                if after < len(out) and out[after] in self._tempo_ids:
                    out[after] = token_id
                else:
                    out.insert(after, token_id)
                continue
            moving_tempo = False
            out.append(token_id)
        return out

    def decode(self, ids: Sequence[int]):
        """Token ids (conditions allowed anywhere) → symusic Score."""
        from miditok import TokSequence

        return self.tokenizer.decode(TokSequence(ids=self.strip_conditions(ids)))

    def tokens(self, ids: Iterable[int]) -> list[str]:
        return [self.id_to_token[i] for i in ids]


def read_vocab_json(path: Path) -> dict:
    """Read a tokenizer JSON written by `Vocab.save`, with one-line errors that name the file."""
    if not path.is_file():
        raise MoodstreamError(f"{path}: vocabulary file not found; restore it (a checkpoint or dataset keeps its "
                              f"tokenizer.json) or pass another --model / --vocab")
    try:
        params = json.loads(path.read_text())
        names = _moodstream_params(params)
        names["genres"], names["moods"]  # noqa: B018 (presence check)
    except (OSError, ValueError) as err:
        raise MoodstreamError(f"{path}: not a readable tokenizer JSON ({err}); restore the file from the training "
                              f"run or dataset it came from") from err
    except (KeyError, TypeError) as err:
        raise MoodstreamError(f"{path}: tokenizer JSON has no moodstream genre/mood lists; use the tokenizer.json "
                              f"a moodstream checkpoint or dataset was written with") from err
    return params


def _moodstream_params(params: dict) -> dict:
    extra = params["config"]["additional_params"]
    extra = extra.get("additional_params", extra)  # MidiTok nests the user's dict one level down
    return extra["moodstream"]


def read_condition_names(path: str | Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(genres, moods) of a vocabulary JSON, `any` first, without importing MidiTok."""
    names = _moodstream_params(read_vocab_json(Path(path)))
    return _validate_names("genre", names["genres"]), _validate_names("mood", names["moods"])


def load_score(path: str | Path):
    """Read a MIDI file into a symusic Score; any failure is one error naming the file."""
    import symusic

    path = Path(path)
    if not path.is_file():
        raise MoodstreamError(f"{path}: MIDI file not found")
    try:
        return symusic.Score(str(path))
    except Exception as err:  # symusic raises RuntimeError/ValueError on bad bytes
        raise MoodstreamError(f"{path}: not a readable MIDI file ({err})") from err
