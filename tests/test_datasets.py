"""Tests for training.datasets on small fixtures written in each corpus layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from training import datasets as D
from training.datasets import (
    DatasetFormatError,
    MissingAudioError,
    ProtocolNotFoundError,
    Utterance,
)

from tests.conftest import DATA
SPEECH = DATA / "bonafide" / "librispeech" / "103-1240-0000.flac"
SR = 16000


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """0.3 s of real speech from the shared data (a tone-plus-noise stand-in if it is absent:
    the loaders never decode audio, they only need real files on disk)."""
    if SPEECH.is_file():
        x, sr = sf.read(SPEECH, frames=int(0.3 * SR), start=SR, dtype="float32")
        assert sr == SR
        return x
    rng = np.random.default_rng(0)
    t = np.arange(int(0.3 * SR)) / SR
    return (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(t.size)).astype(np.float32)


def write_audio(path: Path, x: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, x, SR, format="FLAC" if path.suffix == ".flac" else "WAV", subtype="PCM_16")


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- ASVspoof 2019 LA

LA2019_DEV = """\
LA_0069 LA_D_1047731 - - bonafide
LA_0069 LA_D_1105538 - A01 spoof

LA_0070 LA_D_2034476 - A06 spoof
"""


@pytest.fixture
def la2019(tmp_path: Path, speech: np.ndarray) -> Path:
    proto_dir = tmp_path / "ASVspoof2019_LA_cm_protocols"
    write_text(proto_dir / "ASVspoof2019.LA.cm.dev.trl.txt", LA2019_DEV)
    write_text(proto_dir / "ASVspoof2019.LA.cm.train.trn.txt", "LA_0079 LA_T_1138215 - - bonafide\n")
    write_text(proto_dir / "ASVspoof2019.LA.cm.eval.trl.txt", "LA_0039 LA_E_2834763 - A11 spoof\n")
    for sub, name in [("dev", "LA_D_1047731"), ("dev", "LA_D_1105538"), ("dev", "LA_D_2034476"),
                      ("train", "LA_T_1138215"), ("eval", "LA_E_2834763")]:
        write_audio(tmp_path / f"ASVspoof2019_LA_{sub}" / "flac" / f"{name}.flac", speech)
    return tmp_path


def test_2019_la_parses_fields(la2019: Path) -> None:
    utts = D.load_asvspoof2019_la(la2019, "dev", check_audio=True)
    assert [u.label for u in utts] == ["bonafide", "spoof", "spoof"]
    assert utts[0] == Utterance(
        path=la2019 / "ASVspoof2019_LA_dev" / "flac" / "LA_D_1047731.flac",
        label="bonafide",
        speaker="LA_0069",
        attack=None,
        source="ASVspoof2019-LA",
        subset="dev",
    )
    assert [u.attack for u in utts] == [None, "A01", "A06"]
    assert utts[2].speaker == "LA_0070" and utts[2].is_spoof
    info = sf.info(utts[1].path)  # the fixture files are real, decodable FLAC
    assert (info.samplerate, info.channels, info.format) == (SR, 1, "FLAC")


def test_2019_la_other_subsets_and_dispatch(la2019: Path) -> None:
    (train,) = D.load_asvspoof2019_la(la2019, "train")
    assert train.path.parent == la2019 / "ASVspoof2019_LA_train" / "flac" and train.subset == "train"
    (ev,) = D.load_dataset("asvspoof2019la", la2019, subset="eval", check_audio=True)
    assert (ev.speaker, ev.attack, ev.label) == ("LA_0039", "A11", "spoof")
    assert D.load_dataset("ASVspoof2019-LA", la2019, subset="eval") == [ev]


def test_2019_la_wrong_column_count_names_file_and_line(la2019: Path) -> None:
    proto = la2019 / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    lines = LA2019_DEV.splitlines()
    lines[3] = "LA_0070 LA_D_2034476 spoof"  # line 4 (line 3 is blank and still counts)
    proto.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetFormatError) as info:
        D.load_asvspoof2019_la(la2019, "dev")
    msg = str(info.value)
    assert msg.endswith('ASVspoof2019.LA.cm.dev.trl.txt:4: expected 5 columns "SPEAKER FILE - ATTACK KEY", got 3')
    assert info.value.line == 4 and info.value.path == proto
    assert isinstance(info.value, ValueError)


def test_2019_la_unknown_key_and_pa_protocol(la2019: Path) -> None:
    proto = la2019 / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    proto.write_text("LA_0069 LA_D_1047731 - - bonafide\nLA_0069 LA_D_1105538 - A01 genuine\n")
    with pytest.raises(DatasetFormatError, match=r"dev\.trl\.txt:2: unknown label 'genuine' in column 5; "
                       r"accepted: 'bonafide', 'spoof'"):
        D.load_asvspoof2019_la(la2019, "dev")
    proto.write_text("PA_0079 PA_T_0000001 aaa - bonafide\n")
    with pytest.raises(DatasetFormatError, match=r":1: expected \"-\" in column 3 .* PA protocol"):
        D.load_asvspoof2019_la(la2019, "dev")


def test_2019_la_duplicate_trial_is_refused(la2019: Path) -> None:
    proto = la2019 / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    proto.write_text(LA2019_DEV + "LA_0069 LA_D_1105538 - A01 spoof\n")
    with pytest.raises(DatasetFormatError, match=r":5: duplicate file 'LA_D_1105538' \(first on line 2\)"):
        D.load_asvspoof2019_la(la2019, "dev")


def test_2019_la_bad_bytes_reported_with_line(la2019: Path) -> None:
    proto = la2019 / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    proto.write_bytes(b"LA_0069 LA_D_1047731 - - bonafide\nLA_0069 LA_D_\xff - A01 spoof\n")
    with pytest.raises(DatasetFormatError, match=r"dev\.trl\.txt:2: not valid UTF-8"):
        D.load_asvspoof2019_la(la2019, "dev")


def test_2019_la_missing_protocol_and_bad_subset(tmp_path: Path) -> None:
    with pytest.raises(ProtocolNotFoundError) as info:
        D.load_asvspoof2019_la(tmp_path, "dev")
    expected = tmp_path / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt"
    assert str(expected) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ValueError, match=r"unknown ASVspoof 2019 LA subset 'test'; accepted: 'train', 'dev', 'eval'"):
        D.load_asvspoof2019_la(tmp_path, "test")


def test_2019_la_empty_protocol(la2019: Path) -> None:
    (la2019 / "ASVspoof2019_LA_cm_protocols" / "ASVspoof2019.LA.cm.dev.trl.txt").write_text("\n\n")
    with pytest.raises(DatasetFormatError, match="no utterances found"):
        D.load_asvspoof2019_la(la2019, "dev")


def test_check_audio_counts_and_lists_missing(la2019: Path) -> None:
    flac = la2019 / "ASVspoof2019_LA_dev" / "flac"
    (flac / "LA_D_1105538.flac").unlink()
    (flac / "LA_D_2034476.flac").unlink()
    assert len(D.load_asvspoof2019_la(la2019, "dev")) == 3  # not checked by default
    with pytest.raises(MissingAudioError) as info:
        D.load_asvspoof2019_la(la2019, "dev", check_audio=True)
    msg = str(info.value)
    assert msg.startswith("2 of 3 audio files listed in ")
    assert "LA_D_1105538.flac" in msg and "LA_D_2034476.flac" in msg
    assert "LA_D_1047731" not in msg
    assert info.value.missing == [flac / "LA_D_1105538.flac", flac / "LA_D_2034476.flac"]


def test_check_audio_shows_only_first_few(tmp_path: Path) -> None:
    rows = "".join(f"a{i}.wav,bonafide\n" for i in range(12))
    csv_path = write_text(tmp_path / "m.csv", "path,label\n" + rows)
    with pytest.raises(MissingAudioError, match=r"^12 of 12 audio files .* and 7 more$"):
        D.load_manifest(csv_path, check_audio=True)


# ----------------------------------------------------------------------------- ASVspoof 2021

LA2021_KEYS = """\
LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval
LA_0014 LA_E_1000147 low_cs ita_tx bonafide bonafide notrim eval
LA_0014 LA_E_2000148 none tx - bonafide notrim progress
LA_0020 LA_E_3000149 gsm sin_tx A19 spoof trim hidden_track
"""

DF2021_KEYS = """\
LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - -
VCC2020 DF_E_2000013 mp3m4a vcc2020 bonafide bonafide notrim eval bonafide - - -
"""


@pytest.fixture
def la2021(tmp_path: Path, speech: np.ndarray) -> Path:
    write_text(tmp_path / "keys" / "LA" / "CM" / "trial_metadata.txt", LA2021_KEYS)
    for line in LA2021_KEYS.splitlines():
        write_audio(tmp_path / "ASVspoof2021_LA_eval" / "flac" / f"{line.split()[1]}.flac", speech)
    return tmp_path


def test_2021_la_parses_fields_from_keys_folder(la2021: Path) -> None:
    utts = D.load_asvspoof2021(la2021, "LA", check_audio=True)
    assert [u.label for u in utts] == ["spoof", "bonafide", "bonafide", "spoof"]
    assert [u.attack for u in utts] == ["A07", None, None, "A19"]
    assert [u.subset for u in utts] == ["eval", "eval", "progress", "hidden_track"]
    assert utts[0].path == la2021 / "ASVspoof2021_LA_eval" / "flac" / "LA_E_9332881.flac"
    assert utts[0].speaker == "LA_0009" and utts[0].source == "ASVspoof2021-LA"


def test_2021_subset_filter_and_unknown_subset(la2021: Path) -> None:
    ev = D.load_dataset("asvspoof2021la", la2021, subset="eval")
    assert [u.path.stem for u in ev] == ["LA_E_9332881", "LA_E_1000147"]
    with pytest.raises(ValueError, match=r"no trial of subset 'evaluation' in .*trial_metadata\.txt; "
                       r"subsets present: eval, hidden_track, progress"):
        D.load_asvspoof2021(la2021, "LA", subset="evaluation")


def test_2021_df_keys_in_root_with_extra_columns(tmp_path: Path) -> None:
    write_text(tmp_path / "trial_metadata.txt", DF2021_KEYS)
    utts = D.load_dataset("asvspoof2021df", tmp_path)
    assert [(u.label, u.attack, u.subset) for u in utts] == [("spoof", "A14", "progress"), ("bonafide", None, "eval")]
    assert utts[1].path == tmp_path / "ASVspoof2021_DF_eval" / "flac" / "DF_E_2000013.flac"
    assert utts[1].speaker == "VCC2020"


def test_2021_errors(la2021: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    keys = la2021 / "keys" / "LA" / "CM" / "trial_metadata.txt"
    keys.write_text(LA2021_KEYS + "LA_0009 LA_E_5 alaw ita_tx A07 spoof\n")
    with pytest.raises(DatasetFormatError, match=r"trial_metadata\.txt:5: expected at least 8 columns "
                       r"\"SPEAKER TRIAL CODEC TRANSMISSION ATTACK KEY TRIM SUBSET \.\.\.\", got 6"):
        D.load_asvspoof2021(la2021, "LA")
    keys.write_text(LA2021_KEYS.replace("A19 spoof", "A19 fake"))
    with pytest.raises(DatasetFormatError, match=r":4: unknown label 'fake' in column 6"):
        D.load_asvspoof2021(la2021, "LA")
    with pytest.raises(DatasetFormatError, match=r":1: trial id 'LA_E_9332881' .* another track than DF"):
        D.load_asvspoof2021(la2021, "DF", keys_file=keys)
    with pytest.raises(ValueError, match=r"unknown ASVspoof 2021 track 'PA'; accepted: 'LA', 'DF'"):
        D.load_asvspoof2021(la2021, "PA")
    empty = tmp_path_factory.mktemp("empty")
    with pytest.raises(ProtocolNotFoundError) as info:
        D.load_asvspoof2021(empty, "DF")
    assert str(empty / "trial_metadata.txt") in str(info.value)
    assert str(empty / "keys" / "DF" / "CM" / "trial_metadata.txt") in str(info.value)


# ----------------------------------------------------------------------------- ASVspoof 2017

PROTO2017 = """\
D_1000001.wav genuine M0005 S01 - - -
D_1000002.wav spoof M0005 S01 E05 P07 R03
D_1000003 spoof M0006 S02
"""


def test_2017_parses_and_finds_audio_folder(tmp_path: Path, speech: np.ndarray) -> None:
    write_text(tmp_path / "protocol_V2" / "ASVspoof2017_V2_dev.trl.txt", PROTO2017)
    for name in ("D_1000001", "D_1000002", "D_1000003"):
        write_audio(tmp_path / "ASVspoof2017_V2_dev" / f"{name}.wav", speech)
    utts = D.load_asvspoof2017(tmp_path, "protocol_V2/ASVspoof2017_V2_dev.trl.txt", check_audio=True)
    assert [u.label for u in utts] == ["bonafide", "spoof", "spoof"]
    assert [u.attack for u in utts] == [None, "E05-P07-R03", None]
    assert [u.speaker for u in utts] == ["M0005", "M0005", "M0006"]
    assert {u.subset for u in utts} == {"dev"}
    assert utts[2].path == tmp_path / "ASVspoof2017_V2_dev" / "D_1000003.wav"
    same = D.load_dataset("asvspoof2017", tmp_path, protocol_file=tmp_path / "protocol_V2" / "ASVspoof2017_V2_dev.trl.txt")
    assert same == utts


def test_2017_errors(tmp_path: Path) -> None:
    proto = write_text(tmp_path / "train.trn.txt", "T_1000001.wav genuine\nT_1000002.wav\n")
    expected = r"train\.trn\.txt:2: expected at least 2 columns \"FILE genuine\|spoof \.\.\.\", got 1"
    with pytest.raises(DatasetFormatError, match=expected):
        D.load_asvspoof2017(tmp_path, proto)
    proto.write_text("T_1000001.wav bonafide\n")
    with pytest.raises(DatasetFormatError, match=r":1: unknown label 'bonafide' in column 2; accepted: 'genuine', 'spoof'"):
        D.load_asvspoof2017(tmp_path, proto)
    with pytest.raises(ProtocolNotFoundError, match=r"ASVspoof 2017 protocol file not found: .*nope\.txt"):
        D.load_asvspoof2017(tmp_path, "nope.txt")


# ----------------------------------------------------------------------------- In-the-Wild

ITW_META = """\
file,speaker,label
0.wav,Alec Guinness,spoof
1.wav,Alec Guinness,bona-fide
2.wav,"Gordon, Jr.",bona-fide
"""


def test_in_the_wild_parses(tmp_path: Path, speech: np.ndarray) -> None:
    write_text(tmp_path / "meta.csv", ITW_META)
    for i in range(3):
        write_audio(tmp_path / f"{i}.wav", speech)
    utts = D.load_in_the_wild(tmp_path, check_audio=True)
    assert [u.label for u in utts] == ["spoof", "bonafide", "bonafide"]
    assert [u.speaker for u in utts] == ["Alec Guinness", "Alec Guinness", "Gordon, Jr."]
    assert utts[0].path == tmp_path / "0.wav" and utts[0].source == "InTheWild"
    assert sf.info(utts[0].path).samplerate == SR
    assert D.load_dataset("inthewild", tmp_path / "meta.csv") == utts


def test_in_the_wild_errors(tmp_path: Path) -> None:
    meta = write_text(tmp_path / "meta.csv", ITW_META.replace("Guinness,bona-fide", "Guinness,bonafide"))
    with pytest.raises(DatasetFormatError, match=r"meta\.csv:3: unknown label 'bonafide' in column 'label'; "
                       r"accepted: 'bona-fide', 'spoof'"):
        D.load_in_the_wild(tmp_path)
    meta.write_text("path,speaker,label\n0.wav,A,spoof\n")
    expected = r"meta\.csv:1: expected header 'file,speaker,label', got 'path,speaker,label'"
    with pytest.raises(DatasetFormatError, match=expected):
        D.load_in_the_wild(tmp_path)
    meta.write_text("file,speaker,label\n0.wav,A,spoof\n1.wav,spoof\n")
    with pytest.raises(DatasetFormatError, match=r"meta\.csv:3: expected 3 fields \(file,speaker,label\), got 2"):
        D.load_in_the_wild(tmp_path)
    meta.write_text('file,speaker,label\n0.wav,"A\nB",spoof\n1.wav,"unterminated,spoof\n')
    with pytest.raises(DatasetFormatError, match=r"meta\.csv:\d+: malformed CSV"):
        D.load_in_the_wild(tmp_path)
    with pytest.raises(ProtocolNotFoundError, match=r"In-the-Wild metadata not found: .*missing.meta\.csv"):
        D.load_in_the_wild(tmp_path / "missing")


# ----------------------------------------------------------------------------- manifest


def test_manifest_relative_absolute_and_optional_columns(tmp_path: Path, speech: np.ndarray) -> None:
    corpus = tmp_path / "corpus"
    write_audio(corpus / "spoof" / "a.flac", speech)
    elsewhere = tmp_path / "other" / "b.wav"
    write_audio(elsewhere, speech)
    csv_path = write_text(
        corpus / "manifest.csv",
        "label,path,duration_s,speaker,attack,source\n"
        "spoof,spoof/a.flac,0.3,spk1,griffinlim,ljspeech\n"
        f"bonafide,{elsewhere},0.3,,,\n",
    )
    a, b = D.load_manifest(csv_path, check_audio=True)
    assert a == Utterance(path=corpus / "spoof" / "a.flac", label="spoof", speaker="spk1",
                          attack="griffinlim", source="ljspeech", subset=None)
    assert b == Utterance(path=elsewhere, label="bonafide")
    assert D.load_dataset("manifest", csv_path) == [a, b]


def test_manifest_minimal_columns(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "m.csv", "path,label\r\nx.wav,bonafide\r\n\r\ny.wav,spoof\r\n")
    utts = D.load_manifest(csv_path)
    assert [(u.path.name, u.label, u.speaker) for u in utts] == [("x.wav", "bonafide", None), ("y.wav", "spoof", None)]


def test_manifest_errors_name_file_and_line(tmp_path: Path) -> None:
    csv_path = write_text(tmp_path / "m.csv", "path,label,speaker\nx.wav,bonafide,s1\ny.wav,fake,s2\n")
    expected = r"m\.csv:3: unknown label 'fake' in column 'label'; accepted: 'bonafide', 'spoof'"
    with pytest.raises(DatasetFormatError, match=expected):
        D.load_manifest(csv_path)
    csv_path.write_text("path,label,speaker\nx.wav,bonafide,s1\n\ny.wav,spoof\n")
    with pytest.raises(DatasetFormatError, match=r"m\.csv:4: expected 3 fields \(path,label,speaker\), got 2"):
        D.load_manifest(csv_path)
    # A quoted field spanning two physical lines: later records keep their physical line numbers.
    csv_path.write_text('path,label,speaker\nx.wav,spoof,"two\nlines"\ny.wav,bad,s3\n')
    with pytest.raises(DatasetFormatError, match=r"m\.csv:4: unknown label 'bad'"):
        D.load_manifest(csv_path)
    csv_path.write_text("path,label\n,spoof\n")
    with pytest.raises(DatasetFormatError, match=r"m\.csv:2: empty value in column 'path'"):
        D.load_manifest(csv_path)
    csv_path.write_text("path,label\nx.wav,spoof\nx.wav,bonafide\n")
    with pytest.raises(DatasetFormatError, match=r"m\.csv:3: duplicate path 'x.wav' \(first on line 2\)"):
        D.load_manifest(csv_path)
    with pytest.raises(ProtocolNotFoundError, match=r"manifest not found: .*absent\.csv"):
        D.load_manifest(tmp_path / "absent.csv")


@pytest.mark.skipif(not (DATA / "bonafide" / "manifest.csv").is_file(), reason="shared data not present at ../shared/data")
def test_manifest_header_without_label_is_refused_shared_data() -> None:
    # The shared bona fide listing has no label column: loading it as a manifest must say so.
    with pytest.raises(DatasetFormatError, match=r"manifest\.csv:1: header lacks required column\(s\) label"):
        D.load_manifest(DATA / "bonafide" / "manifest.csv")


@pytest.mark.skipif(not (DATA / "bonafide" / "manifest.csv").is_file(), reason="shared data not present at ../shared/data")
def test_manifest_over_real_shared_files(tmp_path: Path) -> None:
    listing = (DATA / "bonafide" / "manifest.csv").read_text().splitlines()[1:6]
    rows = [line.split(",") for line in listing]
    text = "path,label,speaker,source\n" + "".join(f"{DATA / r[0]},bonafide,{r[1]},librispeech\n" for r in rows)
    utts = D.load_manifest(write_text(tmp_path / "m.csv", text), check_audio=True)
    assert len(utts) == 5 and all(u.label == "bonafide" and u.path.is_file() for u in utts)
    assert utts[0].speaker == rows[0][1]


# ----------------------------------------------------------------------------- misc


def test_load_dataset_unknown_kind_lists_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown dataset kind 'asvspoof2015'; accepted: asvspoof2019la, "
                       r"asvspoof2021la, asvspoof2021df, asvspoof2017, inthewild, manifest"):
        D.load_dataset("asvspoof2015", tmp_path)


def test_utterance_label_is_validated() -> None:
    with pytest.raises(ValueError, match=r"label must be one of \('bonafide', 'spoof'\), got 'genuine'"):
        Utterance(path=Path("x.wav"), label="genuine")


def test_manifest_split_column_and_dash_attack(tmp_path):
    from training.datasets import load_manifest

    csv = tmp_path / "manifest.csv"
    csv.write_text("path,label,speaker,attack,source,split\n"
                   "train/a.flac,bonafide,s1,-,librispeech,train\n"
                   "eval/b.flac,spoof,s2,piper,piper+mp3,eval\n")
    a, b = load_manifest(csv)
    assert (a.subset, a.attack, b.subset, b.attack) == ("train", None, "eval", "piper")
