"""Loaders for anti-spoofing corpora: protocol / metadata files -> ``list[Utterance]``.

Supported layouts:

* ASVspoof 2019 LA  (``load_asvspoof2019_la``)
* ASVspoof 2021 LA / DF evaluation keys (``load_asvspoof2021``)
* ASVspoof 2017 (replay; ``load_asvspoof2017``)
* In-the-Wild (Mueller et al. 2022; ``load_in_the_wild``)
* a generic CSV manifest (``load_manifest``), which is what our own corpus builder writes.

Loaders only read text: audio is neither opened nor decoded (``check_audio=True`` just checks
that the files exist). Parsing is strict because a silently mis-parsed protocol gives wrong
EERs, not crashes: every malformed line raises ``DatasetFormatError`` naming the file, the
1-based line number and what was expected.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "BONAFIDE",
    "SPOOF",
    "LABELS",
    "Utterance",
    "DatasetFormatError",
    "ProtocolNotFoundError",
    "MissingAudioError",
    "load_asvspoof2019_la",
    "load_asvspoof2021",
    "load_asvspoof2017",
    "load_in_the_wild",
    "load_manifest",
    "load_dataset",
    "DATASET_KINDS",
]

PathLike = str | os.PathLike[str]

BONAFIDE = "bonafide"
SPOOF = "spoof"
LABELS = (BONAFIDE, SPOOF)


@dataclass(frozen=True, slots=True)
class Utterance:
    """One labelled audio file.

    ``attack`` is the spoofing system / condition id (e.g. ``A11``), None for bona fide.
    ``source`` names the corpus (or, in manifests, whatever the builder wrote: TTS system,
    vocoder, original corpus). ``subset`` is the split the protocol assigns (train/dev/eval,
    progress/eval/hidden_track for 2021).
    """

    path: Path
    label: str
    speaker: str | None = None
    attack: str | None = None
    source: str | None = None
    subset: str | None = None

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ValueError(f"label must be one of {LABELS}, got {self.label!r}")

    @property
    def is_spoof(self) -> bool:
        return self.label == SPOOF


class DatasetFormatError(ValueError):
    """A protocol / metadata file does not have the expected format.

    ``str(err)`` reads ``FILE:LINE: what was expected, what was found``.
    """

    def __init__(self, path: PathLike, line: int | None, message: str) -> None:
        self.path = Path(path)
        self.line = line
        self.detail = message
        where = f"{self.path}:{line}" if line is not None else str(self.path)
        super().__init__(f"{where}: {message}")


class ProtocolNotFoundError(FileNotFoundError):
    """The protocol / keys / metadata file of a dataset is not where the layout puts it."""

    def __init__(self, what: str, tried: list[Path]) -> None:
        self.tried = tried
        if len(tried) == 1:
            msg = f"{what} not found: {tried[0]}"
        else:
            msg = f"{what} not found; looked for: " + ", ".join(str(p) for p in tried)
        super().__init__(msg)


class MissingAudioError(FileNotFoundError):
    """Audio files referenced by a protocol do not exist (raised by ``check_audio=True``)."""

    def __init__(self, listing: Path, missing: list[Path], total: int, shown: int = 5) -> None:
        self.listing = listing
        self.missing = missing
        self.total = total
        examples = ", ".join(str(p) for p in missing[:shown])
        more = f" and {len(missing) - shown} more" if len(missing) > shown else ""
        super().__init__(
            f"{len(missing)} of {total} audio files listed in {listing} are missing: {examples}{more}"
        )


# ----------------------------------------------------------------------------- shared helpers


def _require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ProtocolNotFoundError(what, [path])
    return path


def _decode(path: Path, data: bytes) -> str:
    """Decode UTF-8 (a BOM is dropped); a bad byte is reported with its line number."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DatasetFormatError(path, line, f"not valid UTF-8 text ({err.reason} at byte {err.start})") from None


def _protocol_lines(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number, whitespace-split columns) for each non-blank line."""
    text = _decode(path, path.read_bytes())
    for lineno, line in enumerate(text.splitlines(), start=1):
        cols = line.split()
        if cols:
            yield lineno, cols


def _csv_rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number where the record starts, fields) for each non-empty CSV record."""
    text = _decode(path, path.read_bytes())
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            raise DatasetFormatError(path, reader.line_num, f"malformed CSV: {err}") from None
        if row and any(field.strip() for field in row):
            yield start, [field.strip() for field in row]
        start = reader.line_num + 1


def _label(value: str, accepted: Mapping[str, str], path: Path, lineno: int, column: str) -> str:
    try:
        return accepted[value]
    except KeyError:
        choices = ", ".join(repr(k) for k in accepted)
        raise DatasetFormatError(path, lineno, f"unknown label {value!r} in {column}; accepted: {choices}") from None


def _no_dash(value: str) -> str | None:
    """Protocols write '-' (or nothing) for 'not applicable'."""
    return None if value in ("", "-") else value


class _DuplicateGuard:
    """Refuses the same trial twice: a doubled protocol would silently weight the EER."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self.seen: dict[str, int] = {}

    def check(self, key: str, lineno: int) -> None:
        first = self.seen.setdefault(key, lineno)
        if first != lineno:
            raise DatasetFormatError(self.path, lineno, f"duplicate {self.what} {key!r} (first on line {first})")


def _finish(utts: list[Utterance], listing: Path, check_audio: bool) -> list[Utterance]:
    if not utts:
        raise DatasetFormatError(listing, None, "no utterances found (the file has no entries)")
    if check_audio:
        missing = [u.path for u in utts if not u.path.is_file()]
        if missing:
            raise MissingAudioError(listing, missing, len(utts))
    return utts


def _choice(value: str, accepted: tuple[str, ...], what: str) -> str:
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(repr(a) for a in accepted)}")
    return value


# ----------------------------------------------------------------------------- ASVspoof 2019 LA

_LA2019_PROTOCOL_SUFFIX = {"train": "train.trn", "dev": "dev.trl", "eval": "eval.trl"}
_ASVSPOOF_KEYS = {"bonafide": BONAFIDE, "spoof": SPOOF}


def load_asvspoof2019_la(root: PathLike, subset: str, *, check_audio: bool = False) -> list[Utterance]:
    """ASVspoof 2019 logical access, one of ``train``/``dev``/``eval``.

    Protocol ``root/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.<subset>.{trn,trl}.txt``,
    lines ``SPEAKER FILE - ATTACK KEY`` (e.g. ``LA_0039 LA_E_2834763 - A11 spoof``);
    audio ``root/ASVspoof2019_LA_<subset>/flac/FILE.flac``.
    """
    _choice(subset, tuple(_LA2019_PROTOCOL_SUFFIX), "ASVspoof 2019 LA subset")
    root = Path(root)
    proto = _require_file(
        root / "ASVspoof2019_LA_cm_protocols" / f"ASVspoof2019.LA.cm.{_LA2019_PROTOCOL_SUFFIX[subset]}.txt",
        f"ASVspoof 2019 LA {subset} protocol",
    )
    audio_dir = root / f"ASVspoof2019_LA_{subset}" / "flac"
    dups = _DuplicateGuard(proto, "file")
    utts: list[Utterance] = []
    for lineno, cols in _protocol_lines(proto):
        if len(cols) != 5:
            raise DatasetFormatError(
                proto, lineno, f'expected 5 columns "SPEAKER FILE - ATTACK KEY", got {len(cols)}'
            )
        speaker, file_id, unused, attack, key = cols
        if unused != "-":
            raise DatasetFormatError(
                proto,
                lineno,
                f'expected "-" in column 3 of an LA protocol, got {unused!r} (is this a PA protocol?)',
            )
        label = _label(key, _ASVSPOOF_KEYS, proto, lineno, "column 5")
        dups.check(file_id, lineno)
        utts.append(
            Utterance(
                path=audio_dir / f"{file_id}.flac",
                label=label,
                speaker=speaker,
                attack=_no_dash(attack),
                source="ASVspoof2019-LA",
                subset=subset,
            )
        )
    return _finish(utts, proto, check_audio)


# ----------------------------------------------------------------------------- ASVspoof 2021 LA / DF

_TRACKS_2021 = ("LA", "DF")
_KEYS_2021_COLUMNS = "SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET ..."


def _find_2021_keys(root: Path, track: str) -> Path:
    candidates = [root / "trial_metadata.txt", root / "keys" / track / "CM" / "trial_metadata.txt"]
    for c in candidates:
        if c.is_file():
            return c
    raise ProtocolNotFoundError(f"ASVspoof 2021 {track} keys file trial_metadata.txt", candidates)


def load_asvspoof2021(
    root: PathLike,
    track: str,
    *,
    subset: str | None = None,
    keys_file: PathLike | None = None,
    audio_dir: PathLike | None = None,
    check_audio: bool = False,
) -> list[Utterance]:
    """ASVspoof 2021 evaluation data of the ``LA`` or ``DF`` track, labelled from the keys.

    Keys: ``trial_metadata.txt`` in ``root`` or ``root/keys/<track>/CM/`` (or ``keys_file``).
    Whitespace columns: 1 speaker, 2 trial id, 5 attack, 6 key (bonafide/spoof), 8 subset
    (``progress``, ``eval``, ``hidden_track`` ...); DF lines carry extra columns, ignored here.
    ``subset`` keeps only trials of that subset (the official scores use ``eval``).
    Audio: ``root/ASVspoof2021_<track>_eval/flac/TRIAL.flac`` unless ``audio_dir`` is given.
    """
    _choice(track, _TRACKS_2021, "ASVspoof 2021 track")
    root = Path(root)
    if keys_file is not None:
        keys = _require_file(Path(keys_file), f"ASVspoof 2021 {track} keys file")
    else:
        keys = _find_2021_keys(root, track)
    audio = Path(audio_dir) if audio_dir is not None else root / f"ASVspoof2021_{track}_eval" / "flac"
    dups = _DuplicateGuard(keys, "trial")
    prefix = f"{track}_"
    utts: list[Utterance] = []
    for lineno, cols in _protocol_lines(keys):
        if len(cols) < 8:
            raise DatasetFormatError(
                keys, lineno, f'expected at least 8 columns "{_KEYS_2021_COLUMNS}", got {len(cols)}'
            )
        speaker, trial, attack, key, trial_subset = cols[0], cols[1], cols[4], cols[5], cols[7]
        if not trial.startswith(prefix):
            raise DatasetFormatError(
                keys,
                lineno,
                f"trial id {trial!r} in column 2 does not start with {prefix!r}: "
                f"is this the keys file of another track than {track}?",
            )
        label = _label(key, _ASVSPOOF_KEYS, keys, lineno, "column 6")
        dups.check(trial, lineno)
        utts.append(
            Utterance(
                path=audio / f"{trial}.flac",
                label=label,
                speaker=_no_dash(speaker),
                attack=None if label == BONAFIDE else _no_dash(attack),
                source=f"ASVspoof2021-{track}",
                subset=trial_subset,
            )
        )
    if subset is not None and utts:
        present = sorted({u.subset for u in utts if u.subset is not None})
        utts = [u for u in utts if u.subset == subset]
        if not utts:
            raise ValueError(
                f"no trial of subset {subset!r} in {keys}; subsets present: {', '.join(present)}"
            )
    return _finish(utts, keys, check_audio)


# ----------------------------------------------------------------------------- ASVspoof 2017

_KEYS_2017 = {"genuine": BONAFIDE, "spoof": SPOOF}
_SUBSETS = ("train", "dev", "eval")


def _subset_from_name(name: str) -> str | None:
    lowered = name.lower()
    found = [s for s in _SUBSETS if s in lowered]
    return found[0] if len(found) == 1 else None


def load_asvspoof2017(
    root: PathLike,
    protocol_file: PathLike,
    *,
    audio_dir: PathLike | None = None,
    check_audio: bool = False,
) -> list[Utterance]:
    """ASVspoof 2017 (replay) from one protocol file, e.g. ``protocol_V2/ASVspoof2017_V2_dev.trl.txt``.

    Lines ``FILE genuine|spoof [SPEAKER PHRASE ENVIRONMENT PLAYBACK RECORDING]``; ``genuine``
    becomes ``bonafide``. For spoofs with the V2 replay columns, ``attack`` is the replay
    configuration ``ENVIRONMENT-PLAYBACK-RECORDING``.
    ``protocol_file`` may be relative to ``root``. The subset (train/dev/eval) is taken from
    its name; audio is looked up in ``root/ASVspoof2017_V2_<subset>`` or
    ``root/ASVspoof2017_<subset>`` when that folder exists, else in ``root``, unless
    ``audio_dir`` is given.
    """
    root = Path(root)
    proto = Path(protocol_file)
    if not proto.is_absolute() and not proto.is_file():
        proto = root / proto
    _require_file(proto, "ASVspoof 2017 protocol file")
    subset = _subset_from_name(proto.name)
    if audio_dir is not None:
        audio = Path(audio_dir)
    else:
        audio = root
        if subset is not None:
            for cand in (root / f"ASVspoof2017_V2_{subset}", root / f"ASVspoof2017_{subset}"):
                if cand.is_dir():
                    audio = cand
                    break
    dups = _DuplicateGuard(proto, "file")
    utts: list[Utterance] = []
    for lineno, cols in _protocol_lines(proto):
        if len(cols) < 2:
            raise DatasetFormatError(
                proto, lineno, f'expected at least 2 columns "FILE genuine|spoof ...", got {len(cols)}'
            )
        name, key = cols[0], cols[1]
        label = _label(key, _KEYS_2017, proto, lineno, "column 2")
        attack = None
        if label == SPOOF and len(cols) >= 7:
            attack = "-".join(c for c in cols[4:7] if c != "-") or None
        dups.check(name, lineno)
        utts.append(
            Utterance(
                path=audio / (name if Path(name).suffix else f"{name}.wav"),
                label=label,
                speaker=_no_dash(cols[2]) if len(cols) > 2 else None,
                attack=attack,
                source="ASVspoof2017",
                subset=subset,
            )
        )
    return _finish(utts, proto, check_audio)


# ----------------------------------------------------------------------------- In-the-Wild

_ITW_HEADER = ["file", "speaker", "label"]
_ITW_LABELS = {"bona-fide": BONAFIDE, "spoof": SPOOF}


def load_in_the_wild(root: PathLike, *, check_audio: bool = False) -> list[Utterance]:
    """In-the-Wild (Mueller et al., 2022): ``root/meta.csv`` with header ``file,speaker,label``.

    Labels are ``bona-fide`` / ``spoof``; the wav files sit beside ``meta.csv``. ``root`` may
    also be the path of ``meta.csv`` itself. The speaker is the celebrity whose voice it is.
    """
    root = Path(root)
    meta = root if root.suffix.lower() == ".csv" else root / "meta.csv"
    _require_file(meta, "In-the-Wild metadata")
    rows = _csv_rows(meta)
    header_line, header = next(rows, (1, []))
    if [h.lower() for h in header] != _ITW_HEADER:
        raise DatasetFormatError(
            meta, header_line, f"expected header {','.join(_ITW_HEADER)!r}, got {','.join(header)!r}"
        )
    dups = _DuplicateGuard(meta, "file")
    utts: list[Utterance] = []
    for lineno, row in rows:
        if len(row) != 3:
            raise DatasetFormatError(meta, lineno, f"expected 3 fields (file,speaker,label), got {len(row)}")
        name, speaker, key = row
        if not name:
            raise DatasetFormatError(meta, lineno, "empty file name in column 'file'")
        label = _label(key, _ITW_LABELS, meta, lineno, "column 'label'")
        dups.check(name, lineno)
        utts.append(
            Utterance(
                path=meta.parent / name,
                label=label,
                speaker=speaker or None,
                attack=None,
                source="InTheWild",
                subset=None,
            )
        )
    return _finish(utts, meta, check_audio)


# ----------------------------------------------------------------------------- generic manifest

_MANIFEST_REQUIRED = ("path", "label")
_MANIFEST_OPTIONAL = ("speaker", "attack", "source", "subset")
_MANIFEST_LABELS = {BONAFIDE: BONAFIDE, SPOOF: SPOOF}


def load_manifest(csv_path: PathLike, *, check_audio: bool = False) -> list[Utterance]:
    """Generic CSV manifest: header with ``path,label`` and optionally ``speaker,attack,source,subset``
    (``split`` is accepted for ``subset``; an ``attack`` of ``-`` means none).

    Columns may come in any order; other columns (duration, gender ...) are ignored so richer
    manifests still load. ``label`` must be ``bonafide`` or ``spoof``. Relative paths are
    resolved against the CSV's folder, so a corpus folder can be moved as a whole.
    Empty optional fields become None.
    """
    path = Path(csv_path)
    _require_file(path, "manifest")
    rows = _csv_rows(path)
    header_line, header = next(rows, (1, []))
    names = [h.lower() for h in header]
    dup_names = sorted({n for n in names if names.count(n) > 1})
    if dup_names:
        raise DatasetFormatError(path, header_line, f"duplicate column(s) in header: {', '.join(dup_names)}")
    missing = [c for c in _MANIFEST_REQUIRED if c not in names]
    if missing:
        raise DatasetFormatError(
            path,
            header_line,
            f"header lacks required column(s) {', '.join(missing)}; expected path,label[,speaker,attack,source], "
            f"got {','.join(header)!r}",
        )
    if "split" in names and "subset" in names:
        raise DatasetFormatError(path, header_line, "has both 'split' and 'subset' columns; keep one")
    # The corpus builder (training.synth) writes `split`: the same thing as the ASVspoof `subset`.
    index = {("subset" if n == "split" else n): i for i, n in enumerate(names)}
    base = path.parent
    dups = _DuplicateGuard(path, "path")
    utts: list[Utterance] = []
    for lineno, row in rows:
        if len(row) != len(names):
            raise DatasetFormatError(
                path, lineno, f"expected {len(names)} fields ({','.join(names)}), got {len(row)}"
            )
        rel = row[index["path"]]
        if not rel:
            raise DatasetFormatError(path, lineno, "empty value in column 'path'")
        label = _label(row[index["label"]], _MANIFEST_LABELS, path, lineno, "column 'label'")
        dups.check(rel, lineno)
        optional = {c: (row[index[c]] or None) if c in index else None for c in _MANIFEST_OPTIONAL}
        if optional["attack"] == "-":  # ASVspoof's and our builder's mark for "no attack"
            optional["attack"] = None
        audio = Path(rel)
        utts.append(Utterance(path=audio if audio.is_absolute() else base / audio, label=label, **optional))
    return _finish(utts, path, check_audio)


# ----------------------------------------------------------------------------- dispatch


def _load_2021(track: str) -> Callable[..., list[Utterance]]:
    def load(root: PathLike, **kw: Any) -> list[Utterance]:
        return load_asvspoof2021(root, track, **kw)

    return load


_LOADERS: dict[str, Callable[..., list[Utterance]]] = {
    "asvspoof2019la": load_asvspoof2019_la,
    "asvspoof2021la": _load_2021("LA"),
    "asvspoof2021df": _load_2021("DF"),
    "asvspoof2017": load_asvspoof2017,
    "inthewild": load_in_the_wild,
    "manifest": load_manifest,
}
DATASET_KINDS = tuple(_LOADERS)


def load_dataset(kind: str, root: PathLike, **kw: Any) -> list[Utterance]:
    """Load by name; ``kw`` goes to the loader (``subset=`` for 2019 LA, ``protocol_file=`` for 2017 ...).

    Kinds: asvspoof2019la, asvspoof2021la, asvspoof2021df, asvspoof2017, inthewild, manifest
    (case, '-' and '_' are ignored: ``ASVspoof2019-LA`` works). For ``manifest``, ``root`` is the CSV.
    """
    key = kind.lower().replace("-", "").replace("_", "")
    try:
        loader = _LOADERS[key]
    except KeyError:
        raise ValueError(f"unknown dataset kind {kind!r}; accepted: {', '.join(DATASET_KINDS)}") from None
    return loader(root, **kw)
