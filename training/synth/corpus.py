"""Corpus planning, rendering and the manifest.

Plan: every bona fide utterance yields a bona fide copy plus one spoof per
generator (vocoders resynthesize the utterance; TTS speaks a prompt of about
the same length and is attributed to the utterance's speaker, as ASVspoof
attributes spoofs to their target speaker). Each item also gets
``channel_copies`` coded variants. The split is decided by a hash of the
speaker id, so it is speaker-disjoint and stable across runs and seeds;
held-out generator families are rendered for eval speakers only.

Render: all randomness for an item comes from a generator seeded by a hash of
(seed, item id), so a corpus is reproducible byte for byte, whatever the
worker count or the order in which items finish, and an interrupted build
resumes by skipping outputs that already exist and are valid.
"""

from __future__ import annotations

import bisect
import csv
import hashlib
import json
import logging
import multiprocessing
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import (
    SAMPLE_RATE,
    BadAudioError,
    check_audio,
    is_valid_output,
    load_audio,
    normalize_level,
    remove_dc,
    round_trip,
    trim_edges,
    write_flac,
)
from .base import (
    Generator,
    GeneratorUnavailable,
    SynthError,
    SynthInput,
    default_generator_names,
    generator_names,
    make_generator,
)
from .channel import CHANNELS, ChannelOptions, ChannelUnavailable, UnknownChannelError, apply_channel
from .channel import unavailable_reason as channel_unavailable_reason

log = logging.getLogger(__name__)

SPLITS = ("train", "dev", "eval")
MANIFEST_COLUMNS = ("path", "label", "speaker", "attack", "source", "split")
BONAFIDE = "bonafide"
SPOOF = "spoof"
# Unseen-attack numbers come from the leave-families-out protocol (training.generalization), which
# needs every family in every split; --heldout still renders chosen families for eval speakers only.
DEFAULT_HELDOUT: tuple[str, ...] = ()
# Each generator renders a seeded share of the utterances, a different draw for each, so ten
# generators cost what five would on all while every utterance still gets ~5 spoofs of
# different families (the pretrained HiFi-GANs alone cost ~0.55 s per second of speech on one
# core here, ten times WORLD). "*" is the share of every generator not named.
ALL = "*"
DEFAULT_SHARES = {ALL: 0.5}
AUDIO_SUFFIXES = (".flac", ".wav", ".ogg", ".mp3")
# The TTS engines here read 17-20 characters per second of speech; bona fide durations
# include some edge silence, so 17 matches the two classes' durations after trimming.
CHARS_PER_SECOND = 17.0
PROMPTS_RELATIVE = Path("text") / "ljspeech_sentences.tsv"

# What one failing item may raise; anything else is a bug and stops the build.
ITEM_ERRORS = (SynthError, BadAudioError, ChannelUnavailable, OSError, ValueError, RuntimeError,
               subprocess.SubprocessError)


class CorpusError(ValueError):
    """Bad builder input: source, prompts, options or an output folder built differently."""


@dataclass(frozen=True)
class Utterance:
    key: str  # unique and file-name safe, e.g. "librispeech-103-1240-0000"
    path: Path
    speaker: str
    source: str  # short corpus name: "librispeech", "ljspeech"
    duration_s: float | None = None


@dataclass(frozen=True)
class Row:
    """One manifest line."""

    path: str  # relative to the manifest
    label: str
    speaker: str
    attack: str
    source: str
    split: str


@dataclass(frozen=True)
class Output:
    row: Row
    channel: str | None  # None: the clean rendition


@dataclass(frozen=True)
class Task:
    """One generator run on one utterance, and the files it writes."""

    task_id: str
    generator: str  # a generator name, or BONAFIDE for the re-encoded copy
    utterance: Utterance
    split: str
    prompt: str | None
    outputs: tuple[Output, ...]


@dataclass
class BuildOptions:
    source: Path
    out: Path
    generators: tuple[str, ...] = ()  # empty: every registered generator but the opt-in ones
    heldout: tuple[str, ...] = DEFAULT_HELDOUT
    limit: int | None = None  # number of source utterances
    shares: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))  # generator or "*" -> share
    seed: int = 0
    workers: int = 1
    channels: tuple[str, ...] = CHANNELS
    channel_copies: int = 1  # coded variants per item, besides the clean one
    split_ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)
    # Active speech level, dBFS. Speech crest factors reach ~22 dB, so -28 +- 4 keeps peaks
    # below full scale: a limiter would lower peaky items more, an unequal effect.
    target_db: float = -28.0
    level_jitter_db: float = 4.0  # +- uniform, same for both classes
    edge_margin_s: tuple[float, float] = (0.05, 0.3)  # silence kept before/after speech
    noise_floor_db: tuple[float, float] | None = (-78.0, -66.0)  # white noise RMS, dBFS; None: off
    max_seconds: float = 12.0
    # Every item, bona fide included, passes once through this rate on its way to 16 kHz: the
    # resampler's band edge then marks no class (22.05 kHz vocoders and TTS get it anyway).
    chain_rate: int | None = 22050
    prompts: Path | None = None
    progress: bool = True
    channel_options: ChannelOptions = field(default_factory=ChannelOptions)

    def __post_init__(self) -> None:
        self.source, self.out = Path(self.source), Path(self.out)
        if len(self.split_ratios) != 3 or min(self.split_ratios) < 0 or sum(self.split_ratios) <= 0:
            raise CorpusError(f"split ratios must be three non-negative numbers, got {self.split_ratios}")
        if self.workers < 1:
            raise CorpusError(f"--workers must be >= 1, got {self.workers}")
        if self.limit is not None and self.limit < 1:
            raise CorpusError(f"--limit must be >= 1, got {self.limit}")
        if self.channel_copies < 0:
            raise CorpusError(f"--channel-copies must be >= 0, got {self.channel_copies}")
        for name in self.channels:
            if name not in CHANNELS:
                raise UnknownChannelError(f"unknown channel {name!r}; choose from {', '.join(CHANNELS)}")
        for name, share in self.shares.items():
            if not 0.0 < share <= 1.0:
                raise CorpusError(f"--share {name}={share}: a share must be in (0, 1]")
        if self.chain_rate is not None and not SAMPLE_RATE < self.chain_rate <= 192_000:
            raise CorpusError(f"--chain-rate must be above {SAMPLE_RATE} and at most 192000 Hz, got {self.chain_rate}")
        if self.max_seconds <= 1.0:
            raise CorpusError(f"--max-seconds must be > 1, got {self.max_seconds}")

    def fingerprint(self) -> dict[str, object]:
        """Settings that change existing files: resuming with others would mix two corpora."""
        return {
            "seed": self.seed, "heldout": sorted(self.heldout), "channels": list(self.channels),
            "channel_copies": self.channel_copies, "split_ratios": list(self.split_ratios),
            "target_db": self.target_db, "level_jitter_db": self.level_jitter_db,
            "edge_margin_s": list(self.edge_margin_s), "max_seconds": self.max_seconds,
            "noise_floor_db": list(self.noise_floor_db) if self.noise_floor_db else None,
            "chain_rate": self.chain_rate, "shares": dict(sorted(self.shares.items())),
        }


@dataclass
class TaskResult:
    task_id: str
    generator: str
    rows: list[Row]
    error: str | None = None


@dataclass
class BuildSummary:
    planned: int = 0  # output files in the plan
    written: int = 0
    skipped_existing: int = 0
    failed_items: int = 0  # tasks (a task writes its clean and coded files)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (task id, reason)
    per_attack: dict[str, int] = field(default_factory=dict)
    per_split: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    manifest: Path | None = None

    def text(self) -> str:
        lines = [
            f"manifest: {self.manifest}",
            f"files: {self.planned} planned, {self.written} written, "
            f"{self.skipped_existing} already there, {self.failed_items} items failed",
            "per split: " + ", ".join(f"{k} {v}" for k, v in sorted(self.per_split.items())),
            "per attack: " + ", ".join(f"{k} {v}" for k, v in sorted(self.per_attack.items())),
            f"time: {self.elapsed_s:.1f} s",
        ]
        lines += [f"failed {task}: {reason}" for task, reason in self.failures[:20]]
        if len(self.failures) > 20:
            lines.append(f"... and {len(self.failures) - 20} more in failures.csv")
        return "\n".join(lines)


# ---------------------------------------------------------------- hashing


def stable_hash(*parts: object) -> int:
    """64-bit hash of the parts' text, identical on every machine and Python run."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


def item_rng(seed: int, *parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_hash(seed, *parts))


def split_for_speaker(speaker: str, ratios: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> str:
    """train/dev/eval from a hash of the speaker id alone (not the seed: splits stay put)."""
    u = stable_hash("split", speaker) / 2.0**64
    total = sum(ratios)
    edge = 0.0
    for name, ratio in zip(SPLITS, ratios, strict=True):
        edge += ratio / total
        if u < edge:
            return name
    return SPLITS[-1]


# ---------------------------------------------------------------- sources and prompts


def short_source(text: str) -> str:
    """'LibriSpeech (CC BY 4.0)' -> 'librispeech', 'LJ Speech (public domain)' -> 'ljspeech'."""
    return re.sub(r"[^a-z0-9]", "", text.split("(")[0].lower())


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")


def _utterance(path: Path, speaker: str | None, source: str | None, duration: str | None,
               root: Path) -> Utterance:
    rel_parts = path.relative_to(root).parts if path.is_relative_to(root) else path.parts
    src = short_source(source or "") or short_source(rel_parts[-2] if len(rel_parts) > 1 else root.name)
    src = src or "speech"
    stem = _safe(path.stem)
    if not speaker:
        # Without a manifest, the LibriSpeech/VCTK naming "SPEAKER-..." or "SPEAKER_..." is the best guess.
        speaker = f"{src}-{re.split(r'[-_]', stem)[0]}"
    dur = float(duration) if duration not in (None, "") else None
    return Utterance(key=f"{src}-{stem}", path=path, speaker=speaker, source=src, duration_s=dur)


def _manifest_root(manifest: Path, paths: list[str]) -> Path:
    """Folder the manifest's relative paths start from: its own, or the one above it.

    The shared data lists ``bonafide/librispeech/x.flac`` in ``bonafide/manifest.csv``,
    i.e. relative to the data root; manifests written by this builder are relative
    to themselves. The first path that exists decides.
    """
    candidates = (manifest.parent, manifest.parent.parent)
    for rel in paths[:50]:
        for root in candidates:
            if not Path(rel).is_absolute() and (root / rel).is_file():
                return root
    return manifest.parent


def read_source(source: Path) -> list[Utterance]:
    """Bona fide utterances from a manifest CSV, a folder with manifest.csv, or a folder of audio.

    A manifest needs a ``path`` column (relative to the manifest or its parent); ``speaker``,
    ``source`` and ``duration_s`` are used when present, and rows whose
    ``label`` is not bonafide are ignored.
    """
    source = Path(source)
    if source.is_dir() and (source / "manifest.csv").is_file():
        source = source / "manifest.csv"
    utterances: list[Utterance] = []
    if source.is_file():
        with source.open(newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or "path" not in reader.fieldnames:
                raise CorpusError(f"{source}: a source manifest needs a 'path' column, has {reader.fieldnames}")
            rows = [r for r in reader if r.get("label", BONAFIDE) in (BONAFIDE, "bona-fide", "")]
        root = _manifest_root(source, [r["path"] for r in rows])
        for row in rows:
            path = Path(row["path"])
            path = path if path.is_absolute() else root / path
            utterances.append(_utterance(path, row.get("speaker"), row.get("source"),
                                         row.get("duration_s"), root))
    elif source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES):
            utterances.append(_utterance(path, None, None, None, source))
    else:
        raise CorpusError(f"--source {source} is neither a manifest CSV nor a folder")
    if not utterances:
        raise CorpusError(f"--source {source} lists no bona fide audio")
    seen: dict[str, Path] = {}
    for utt in utterances:
        if utt.key in seen:
            raise CorpusError(f"two source files map to the item name {utt.key!r}: {seen[utt.key]} and {utt.path}")
        seen[utt.key] = utt.path
    return utterances


def find_prompts(source: Path) -> Path | None:
    """ljspeech_sentences.tsv in text/ beside or above the source (the shared data layout)."""
    start = source if source.is_dir() else source.parent
    for folder in (start, *start.parents[:3]):
        if (folder / PROMPTS_RELATIVE).is_file():
            return folder / PROMPTS_RELATIVE
    return None


@dataclass(frozen=True)
class Prompts:
    """Prompt sentences sorted by length, with the lengths kept for bisection."""

    texts: tuple[str, ...]
    lengths: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.texts)


def load_prompts(path: Path, min_chars: int = 20, max_chars: int = 250) -> Prompts:
    """Prompt sentences from an ``id|text`` file, sorted by length for duration matching."""
    texts = []
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            _, _, text = line.rstrip("\n").partition("|")
            text = " ".join(text.split())
            if min_chars <= len(text) <= max_chars:
                texts.append(text)
    if not texts:
        raise CorpusError(f"{path}: no 'id|text' lines with {min_chars}-{max_chars} characters")
    texts.sort(key=lambda t: (len(t), t))
    return Prompts(tuple(texts), tuple(len(t) for t in texts))


def choose_prompt(prompts: Prompts, seconds: float, rng: np.random.Generator) -> str:
    """A prompt whose reading time is close to ``seconds``, so TTS durations match bona fide."""
    target = seconds * CHARS_PER_SECOND
    lo = bisect.bisect_left(prompts.lengths, 0.8 * target)
    hi = bisect.bisect_right(prompts.lengths, 1.25 * target)
    if hi <= lo:  # nothing in range: take the nearest length
        lo = min(bisect.bisect_left(prompts.lengths, target), len(prompts) - 1)
        hi = lo + 1
    return prompts.texts[int(rng.integers(lo, hi))]


# ---------------------------------------------------------------- planning


def resolve_generators(opts: BuildOptions) -> list[str]:
    known = generator_names()
    names = list(opts.generators) or default_generator_names()
    for name in [*names, *opts.heldout, *(s for s in opts.shares if s != ALL)]:
        if name not in known:
            raise CorpusError(f"unknown generator {name!r}; choose from {', '.join(known)}")
    return names


def plan(opts: BuildOptions, utterances: list[Utterance], generators: list[str],
         prompts: Prompts | None) -> list[Task]:
    """Every task of the corpus, in a deterministic order."""
    chosen = sorted(utterances, key=lambda u: stable_hash("order", u.key))
    if opts.limit is not None:
        chosen = chosen[: opts.limit]
    needs_text = {name: make_generator(name).needs == "text" for name in generators}
    tasks = []
    for utt in chosen:
        split = split_for_speaker(utt.speaker, opts.split_ratios)
        for gen in [BONAFIDE, *generators]:
            if gen in opts.heldout and split != "eval":
                continue  # unseen attacks: never in train or dev
            share = 1.0 if gen == BONAFIDE else opts.shares.get(gen, opts.shares.get(ALL, 1.0))
            if stable_hash("share", gen, utt.key) / 2.0**64 >= share:
                continue
            task_id = f"{utt.key}__{gen}"
            prompt = None
            if gen != BONAFIDE and needs_text[gen]:
                if prompts is None:
                    raise CorpusError(f"generator {gen} needs prompts: pass --prompts FILE")
                seconds = min(utt.duration_s or 6.0, opts.max_seconds)
                prompt = choose_prompt(prompts, seconds, item_rng(opts.seed, task_id, "prompt"))
            tasks.append(Task(task_id, gen, utt, split, prompt, _outputs(opts, utt, gen, split, task_id)))
    return tasks


def _outputs(opts: BuildOptions, utt: Utterance, gen: str, split: str, task_id: str) -> tuple[Output, ...]:
    label = BONAFIDE if gen == BONAFIDE else SPOOF
    attack = "-" if gen == BONAFIDE else gen
    base_source = utt.source if gen == BONAFIDE else gen
    channels: list[str | None] = [None]
    k = min(opts.channel_copies, len(opts.channels))
    if k:
        picked = item_rng(opts.seed, task_id, "channels").choice(len(opts.channels), size=k, replace=False)
        channels += [opts.channels[i] for i in sorted(picked)]
    outs = []
    for ch in channels:
        suffix = f"__{ch}" if ch else ""
        source = f"{base_source}+{ch}" if ch else base_source
        path = f"{split}/{gen}/{utt.key}{suffix}.flac"
        outs.append(Output(Row(path, label, utt.speaker, attack, source, split), ch))
    return tuple(outs)


# ---------------------------------------------------------------- rendering (runs in workers)

_GENERATORS: dict[str, Generator] = {}


def _generator(name: str) -> Generator:
    if name not in _GENERATORS:
        _GENERATORS[name] = make_generator(name)
    return _GENERATORS[name]


def render_base(task: Task, opts: BuildOptions) -> tuple[np.ndarray, float]:
    """The clean, trimmed, level-normalized audio of a task and its level target."""
    rng = item_rng(opts.seed, task.task_id)
    native_rate = SAMPLE_RATE
    if task.generator == BONAFIDE:
        x = load_audio(task.utterance.path, opts.max_seconds)
    else:
        gen = _generator(task.generator)
        if gen.needs == "audio":
            item = SynthInput(rng=rng, audio=load_audio(task.utterance.path, opts.max_seconds))
        else:
            item = SynthInput(rng=rng, text=task.prompt)
        x = gen(item)
        native_rate = gen.native_rate
        check_audio(x, what=f"{task.generator} output")
    if opts.chain_rate is not None and native_rate != opts.chain_rate:
        x = round_trip(x, opts.chain_rate)
    # The same post-processing for every item, whatever made it (see module docstring).
    x = remove_dc(x[: int(opts.max_seconds * SAMPLE_RATE)])
    lead, trail = rng.uniform(*opts.edge_margin_s, size=2)
    x = trim_edges(x, float(lead), float(trail))
    check_audio(x, what=f"{task.generator} output after trimming")
    target = opts.target_db + float(rng.uniform(-opts.level_jitter_db, opts.level_jitter_db))
    x = normalize_level(x, target)
    if opts.noise_floor_db is not None:
        # TTS pauses and padded margins are digital silence, recordings never are: a faint
        # common floor (tens of dB under a recording's own) removes that shortcut.
        floor_db = float(rng.uniform(*opts.noise_floor_db))
        x = x + (10.0 ** (floor_db / 20.0) * rng.standard_normal(x.size)).astype(np.float32)
    return x, target


def render_task(task: Task, pending: tuple[Output, ...], opts: BuildOptions) -> TaskResult:
    """Write the pending outputs of one task; a failure is returned, not raised."""
    rows = []
    try:
        base, target = render_base(task, opts)
        for out in pending:
            y = base
            if out.channel:
                coded = apply_channel(out.channel, base, item_rng(opts.seed, task.task_id, out.channel),
                                      opts.channel_options)
                y = normalize_level(remove_dc(coded), target)
            write_flac(opts.out / out.row.path, y)
            rows.append(out.row)
    except ITEM_ERRORS as err:
        return TaskResult(task.task_id, task.generator, rows, error=f"{type(err).__name__}: {err}")
    return TaskResult(task.task_id, task.generator, rows)


# ---------------------------------------------------------------- manifest


def write_manifest(path: Path, rows: Iterable[Row]) -> None:
    """Sorted by path so two builds of the same corpus give the same bytes."""
    tmp = path.with_name(f".{path.name}.part")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        for row in sorted(rows, key=lambda r: r.path):
            writer.writerow([getattr(row, c) for c in MANIFEST_COLUMNS])
    os.replace(tmp, path)


def read_manifest(path: Path) -> list[Row]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [Row(**{c: r[c] for c in MANIFEST_COLUMNS}) for r in csv.DictReader(fh)]


class _IncrementalManifest:
    """manifest.partial.csv, appended and flushed as items finish, so a crash loses nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fh = path.open("w", newline="", encoding="utf-8")
        self.writer = csv.writer(self.fh, lineterminator="\n")
        self.writer.writerow(MANIFEST_COLUMNS)

    def add(self, rows: Iterable[Row]) -> None:
        for row in rows:
            self.writer.writerow([getattr(row, c) for c in MANIFEST_COLUMNS])
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


# ---------------------------------------------------------------- the build


def check_available(generators: list[str], channels: tuple[str, ...]) -> None:
    missing = [r for r in (make_generator(g).unavailable_reason() for g in generators) if r]
    missing += [r for r in (channel_unavailable_reason(c) for c in channels) if r]
    if missing:
        raise GeneratorUnavailable("; ".join(missing) + " (or leave them out with --generators/--channels)")


def _check_fingerprint(opts: BuildOptions) -> None:
    info = opts.out / "build.json"
    if not info.is_file():
        return
    previous = json.loads(info.read_text(encoding="utf-8")).get("fingerprint", {})
    current = json.loads(json.dumps(opts.fingerprint()))
    changed = sorted(k for k in current if previous.get(k) != current[k])
    if changed:
        raise CorpusError(f"{opts.out} was built with other {', '.join(changed)}; use a new --out to change them")


def build(opts: BuildOptions) -> BuildSummary:
    """Plan, render what is missing, and write manifest.csv (see the module docstring)."""
    started = time.monotonic()
    generators = resolve_generators(opts)
    check_available(generators, opts.channels if opts.channel_copies else ())
    utterances = read_source(opts.source)
    prompts = None
    if any(make_generator(g).needs == "text" for g in generators):
        prompt_file = opts.prompts or find_prompts(opts.source)
        if prompt_file is None:
            raise CorpusError(f"no {PROMPTS_RELATIVE} near {opts.source}: pass --prompts FILE")
        prompts = load_prompts(prompt_file)
    tasks = plan(opts, utterances, generators, prompts)
    opts.out.mkdir(parents=True, exist_ok=True)
    _check_fingerprint(opts)
    for leftover in opts.out.rglob(".*.part"):  # half-written files of an interrupted build
        leftover.unlink()
    (opts.out / "build.json").write_text(json.dumps({
        "fingerprint": opts.fingerprint(), "generators": generators, "source": str(opts.source),
        "limit": opts.limit, "sample_rate": SAMPLE_RATE, "soundfile": sf.__version__,
        "libsndfile": sf.__libsndfile_version__,
    }, indent=2) + "\n", encoding="utf-8")

    summary = BuildSummary(planned=sum(len(t.outputs) for t in tasks))
    done: list[Row] = []
    todo: list[tuple[Task, tuple[Output, ...]]] = []
    for task in tasks:
        pending = tuple(o for o in task.outputs if not is_valid_output(opts.out / o.row.path))
        done += [o.row for o in task.outputs if o not in pending]
        if pending:
            todo.append((task, pending))
    summary.skipped_existing = len(done)
    partial = _IncrementalManifest(opts.out / "manifest.partial.csv")
    partial.add(done)

    from tqdm import tqdm

    bar = tqdm(total=len(todo), unit="item", desc="synth", disable=not opts.progress, dynamic_ncols=True)

    def collect(result: TaskResult) -> None:
        done.extend(result.rows)
        partial.add(result.rows)
        summary.written += len(result.rows)
        if result.error:
            summary.failures.append((result.task_id, result.error))
            log.warning("skipped %s: %s", result.task_id, result.error)
            bar.set_postfix(failed=len(summary.failures))
        bar.update(1)

    from tqdm.contrib.logging import logging_redirect_tqdm

    # Failure messages go through tqdm.write so they do not tear the progress bar.
    with logging_redirect_tqdm():
        try:
            if opts.workers == 1 or len(todo) <= 1:
                for task, pending in todo:
                    collect(render_task(task, pending, opts))
            else:
                # spawn: onnxruntime and OpenMP-backed libraries do not survive fork() reliably.
                context = multiprocessing.get_context("spawn")
                with ProcessPoolExecutor(opts.workers, mp_context=context) as pool:
                    futures = [pool.submit(render_task, task, pending, opts) for task, pending in todo]
                    for future in as_completed(futures):
                        collect(future.result())
        finally:
            bar.close()
            partial.close()

    manifest = opts.out / "manifest.csv"
    write_manifest(manifest, done)
    (opts.out / "manifest.partial.csv").unlink()
    failures_csv = opts.out / "failures.csv"
    if summary.failures:
        with failures_csv.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(["item", "reason"])
            writer.writerows(sorted(summary.failures))
    elif failures_csv.exists():
        failures_csv.unlink()
    summary.failures.sort()
    summary.failed_items = len(summary.failures)
    summary.per_attack = dict(Counter(r.attack if r.attack != "-" else BONAFIDE for r in done))
    summary.per_split = dict(Counter(r.split for r in done))
    summary.manifest = manifest
    summary.elapsed_s = time.monotonic() - started
    return summary

