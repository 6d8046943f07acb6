"""RAVDESS (docs/method.md §3.2): the raw release, or the reference's preprocessed arrays.

Raw release: ``Actor_01`` ... ``Actor_24`` folders anywhere under the source folder (the audio and the video
downloads may sit side by side) holding ``MM-VV-EE-II-SS-RR-AA.wav|.mp4`` files: modality (01 audio-video,
02 video only, 03 audio only), vocal channel (01 speech, 02 song), emotion 01-08, intensity, statement,
repetition, actor. A sample is a speech recording: its audio-only WAV (``03-01-...``) and its audio-video MP4
(``01-01-...``) with the same other fields; the label is the emotion minus 1. Song recordings and
video-only files are ignored, as in the reference (1,440 speech clips).

* audio: read with soundfile, channels averaged, resampled to 22,050 Hz, zero-padded at the end or
  centre-cropped to 3.6 s, 15 MFCCs (librosa's defaults, see mfcc.py) -> 15 x 156, min-max per sample;
* visual: ``prepare.frames_per_clip`` frames evenly spaced in the first 3.6 s, a fixed face crop (video.py:
  MTCNN is not available offline) resized to ``prepare.frame_size``, BGR as the reference keeps them, frames
  past the end zero; min-max per colour channel over the whole data set.

Preprocessed arrays (``video_data.npy`` N x F x 3 x S x S, ``audio_data.npy`` N x 15 x T, ``label_data.npy``
N with labels 0-7), in the source folder or its ``RAVDESS_preprocessed_npy/``: scaled the same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import soundfile

from mstcli.data.mfcc import HOP, MFCCExtractor, fit_length, resample
from mstcli.data.normalize import RunningRange, minmax_per_sample
from mstcli.data.sources import DataSource, register
from mstcli.data.sources.checks import integer_labels, load_npy, require_shape
from mstcli.data.sources.streaming import Block, stream_features
from mstcli.data.video import read_frames
from mstcli.errors import UserError

CLASS_NAMES = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
SAMPLE_RATE = 22050
SECONDS = 3.6
N_MFCC = 15
ARRAY_FILES = ("video_data.npy", "audio_data.npy", "label_data.npy")
NAME = re.compile(r"(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)")
ACTOR_DIR = re.compile(r"Actor_\d\d")
BLOCK_CLIPS = 16


@dataclass(frozen=True)
class Recording:
    """One speech recording: its audio file, its video file and its emotion class."""

    key: str  # the file name fields after the modality, e.g. 01-05-02-01-02-12
    wav: Path
    mp4: Path
    label: int


def find_recordings(root: Path) -> list[Recording]:
    """Pair every speech WAV with its audio-video MP4, checking names; sorted by actor, then fields."""
    files: dict[tuple[str, str], Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() not in (".wav", ".mp4") or not ACTOR_DIR.fullmatch(path.parent.name):
            continue
        match = NAME.fullmatch(path.stem)
        if not match:
            raise UserError(f"{path}: not a RAVDESS file name (MM-VV-EE-II-SS-RR-AA{path.suffix})")
        modality, vocal, emotion = match.group(1), match.group(2), int(match.group(3))
        if not 1 <= emotion <= 8:
            raise UserError(f"{path}: emotion field {match.group(3)} outside 01-08")
        wanted = (path.suffix.lower(), modality) in ((".wav", "03"), (".mp4", "01"))
        if wanted and vocal == "01":
            files[(path.suffix.lower(), path.stem[3:])] = path
    keys = sorted({key for _, key in files}, key=lambda k: (k[-2:], k))
    if not keys:
        raise UserError(f"{root}: no RAVDESS speech files (Actor_XX/03-01-*.wav and Actor_XX/01-01-*.mp4) found")
    recordings = []
    for key in keys:
        wav, mp4 = files.get((".wav", key)), files.get((".mp4", key))
        if wav is None or mp4 is None:
            have, need = (mp4, f"03-{key}.wav") if wav is None else (wav, f"01-{key}.mp4")
            raise UserError(f"{have.parent / need}: missing (the partner of {have.name})")
        recordings.append(Recording(key, wav, mp4, int(key[3:5]) - 1))
    return recordings


def read_audio(path: Path, extractor: MFCCExtractor) -> np.ndarray:
    try:
        wave, rate = soundfile.read(path, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError) as exc:
        raise UserError(f"{path}: not a readable WAV file ({exc})") from None
    wave = fit_length(resample(wave.mean(axis=1), rate, SAMPLE_RATE), int(round(SECONDS * SAMPLE_RATE)))
    return extractor(wave[None])[0]


def _release_blocks(recordings: list[Recording], params: Any) -> Iterator[Block]:
    extractor = MFCCExtractor(SAMPLE_RATE, N_MFCC)
    for start in range(0, len(recordings), BLOCK_CLIPS):
        chunk = recordings[start : start + BLOCK_CLIPS]
        audio = np.stack([read_audio(r.wav, extractor) for r in chunk])
        visual = np.stack([read_frames(r.mp4, params.frames_per_clip, SECONDS, params.frame_size) for r in chunk])
        yield {"visual": visual, "audio": minmax_per_sample(audio)}


def _array_folder(root: Path) -> Path | None:
    for folder in (root, root / "RAVDESS_preprocessed_npy"):
        if any((folder / name).exists() for name in ARRAY_FILES):
            return folder
    return None


def _array_blocks(video: np.ndarray, audio: np.ndarray) -> Iterator[Block]:
    for start in range(0, len(video), BLOCK_CLIPS):
        stop = start + BLOCK_CLIPS
        yield {"visual": np.asarray(video[start:stop], dtype=np.float32), "audio": minmax_per_sample(audio[start:stop])}


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    if not source.is_dir():
        raise UserError(f"{source}: RAVDESS needs a folder (Actor_XX folders, or the preprocessed .npy arrays)")
    common = dict(dataset="ravdess", class_names=CLASS_NAMES, params=meta, description="RAVDESS clips")
    arrays = _array_folder(source)
    if arrays is not None:
        video = load_npy(arrays / "video_data.npy", "RAVDESS preprocessed video")
        audio = load_npy(arrays / "audio_data.npy", "RAVDESS preprocessed audio")
        label_path = arrays / "label_data.npy"
        labels = integer_labels(label_path, load_npy(label_path, "RAVDESS labels", mmap=False), len(CLASS_NAMES))
        require_shape(arrays / "video_data.npy", video, (len(labels), None, 3, None, None), "video (N x F x 3 x S x S)")
        require_shape(arrays / "audio_data.npy", audio, (len(labels), None, None), "audio (N x MFCC x frames)")
        stream_features(
            out,
            shapes={"visual": video.shape[1:], "audio": audio.shape[1:]},
            labels=labels,
            blocks=_array_blocks(video, audio),
            dataset_ranges={"visual": RunningRange(channel_axis=1)},
            **common,
        )
        return
    recordings = find_recordings(source)
    frames = params.frames_per_clip
    stream_features(
        out,
        shapes={"visual": (frames, 3, params.frame_size, params.frame_size), "audio": (N_MFCC, _mfcc_frames())},
        labels=np.array([r.label for r in recordings], dtype=np.int64),
        blocks=_release_blocks(recordings, params),
        dataset_ranges={"visual": RunningRange(channel_axis=1)},
        **common,
    )


def _mfcc_frames() -> int:
    return 1 + int(round(SECONDS * SAMPLE_RATE)) // HOP


SOURCE = register(
    DataSource(
        name="ravdess",
        modalities=("visual", "audio"),
        default_source=None,
        description="RAVDESS speech clips (Actor_XX WAV + MP4, or the reference's .npy arrays): 8 emotions",
        build=build,
    )
)
