"""Reading audio files: the one reader of ``mst prepare``'s folder workers and of ``mst predict``.

A clip's rate and length come from its header, and only the frames a window needs are decoded, so the window of
an hour-long recording costs the window, not the hour (a whole-file read in float64 would cost gigabytes before
the window is cut). Channels are averaged to mono.

Which library decodes a file goes by its suffix: libsndfile (the ``soundfile`` package) for .wav, .flac, .ogg,
.mp3 and, where the installed libsndfile has Opus, .opus; PyAV (FFmpeg, the ``av`` package) for .m4a (AAC or ALAC
in MP4) and for .opus where libsndfile has no Opus.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
AUDIO_SUFFIXES = (*SOUNDFILE_SUFFIXES, ".opus", ".m4a")
PYAV = "PyAV (pip install av)"
#: frames decoded beyond both ends of a window before resampling, so the resampling filter sees real samples there
RESAMPLE_MARGIN = 256


class ClipError(Exception):
    """A clip that cannot be read; the message is the reason, shown with the file."""


@dataclass(frozen=True)
class ClipInfo:
    rate: int
    frames: int  # samples per channel
    channels: int


def _reason(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


@functools.cache
def _soundfile_has_opus() -> bool:
    import soundfile

    return "OPUS" in soundfile.available_subtypes("OGG")


@functools.cache
def _pyav_missing() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return True
    return False


def decoder_of(suffix: str) -> str:
    """``soundfile`` or ``av``: the library that reads files of ``suffix`` here."""
    suffix = suffix.lower()
    if suffix in SOUNDFILE_SUFFIXES or (suffix == ".opus" and _soundfile_has_opus()):
        return "soundfile"
    return "av"


def missing_decoder(suffix: str) -> str | None:
    """Why files of ``suffix`` cannot be read on this machine (the package that would read them), or None."""
    if decoder_of(suffix) == "av" and _pyav_missing():
        return f"reading {suffix} files needs {PYAV}, which is not installed"
    return None


def clip_info(path: Path) -> ClipInfo:
    """The rate, length and channels of a clip, from its header (nothing decoded where the format says them)."""
    missing = missing_decoder(path.suffix)
    if missing:
        raise ClipError(missing)
    if decoder_of(path.suffix) == "soundfile":
        import soundfile

        try:
            info = soundfile.info(str(path))
        except (RuntimeError, OSError, ValueError, TypeError) as exc:  # soundfile.LibsndfileError is a RuntimeError
            raise ClipError(f"cannot decode the audio ({_reason(exc)})") from None
        frames, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
    else:
        frames, rate, channels = _pyav_info(path)
    if frames <= 0:
        raise ClipError("empty audio (no samples)")
    return ClipInfo(rate, frames, channels)


def read_frames(path: Path, start: int, count: int) -> np.ndarray:
    """Mono float64 samples ``start`` .. ``start + count`` of the clip (fewer where it ends sooner)."""
    if decoder_of(path.suffix) == "soundfile":
        import soundfile

        try:
            samples, _ = soundfile.read(str(path), start=start, frames=count, dtype="float64", always_2d=True)
        except (RuntimeError, OSError, ValueError, TypeError) as exc:
            raise ClipError(f"cannot decode the audio ({_reason(exc)})") from None
        mono = samples.mean(axis=1)
    else:
        mono = _pyav_frames(path, start, count)
    if not np.isfinite(mono).all():
        raise ClipError("the audio holds NaN or Inf samples")
    return mono


def read_clip(path: Path) -> tuple[np.ndarray, int]:
    """The whole clip: mono float64 samples and the rate (for steps that transform the whole clip)."""
    info = clip_info(path)
    samples = read_frames(path, 0, info.frames)
    if len(samples) == 0:
        raise ClipError("empty audio (no samples)")
    return samples, info.rate


def centre_in_window(samples: np.ndarray, window: int) -> np.ndarray:
    """``window`` float32 samples: a shorter clip zero-padded on both sides ((window - n) // 2 zeros before it), a
    longer one cut to its middle (from (n - window) // 2)."""
    out = np.zeros(window, dtype=np.float32)
    n = len(samples)
    if n >= window:
        start = (n - window) // 2
        out[:] = samples[start : start + window]
    else:
        start = (window - n) // 2
        out[start : start + n] = samples
    return out


def resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    """``samples`` at ``rate`` resampled to ``target`` Hz (torchaudio's windowed-sinc resampler)."""
    if rate == target:
        return samples
    import torch
    import torchaudio

    return torchaudio.functional.resample(torch.from_numpy(samples), rate, target).numpy()


def read_window(path: Path, target: int, window: int) -> np.ndarray:
    """The clip at ``target`` Hz centred in ``window`` samples, as :func:`centre_in_window` of the whole clip
    resampled, but decoding only the frames the window needs (plus a margin for the resampler) when the clip is
    longer than the window: the same samples for a short clip, equal to rounding for a long one."""
    info = clip_info(path)
    rate, frames = info.rate, info.frames
    if rate == target:
        start = max(0, (frames - window) // 2)
        return centre_in_window(read_frames(path, start, min(window, frames)), window)
    # torchaudio resamples in blocks of `step_in` input frames -> `step_out` output frames (the rates over their gcd)
    divisor = math.gcd(rate, target)
    step_in, step_out = rate // divisor, target // divisor
    length_out = math.ceil(step_out * frames / step_in)
    margin = math.ceil(RESAMPLE_MARGIN / step_in)  # in blocks
    if length_out <= window or frames <= (math.ceil(window / step_out) + 2 * margin + 2) * step_in:
        return centre_in_window(resample(read_frames(path, 0, frames), rate, target), window)
    first_out = (length_out - window) // 2
    first_block = max(0, first_out // step_out - margin)
    last_block = math.ceil((first_out + window) / step_out) + margin
    start = first_block * step_in
    part = resample(read_frames(path, start, min(frames, last_block * step_in) - start), rate, target)
    offset = first_out - first_block * step_out
    return part[offset : offset + window].astype(np.float32)


# ---- PyAV (FFmpeg) -----------------------------------------------------------------------------------------------


def _open(path: Path):  # noqa: ANN202 (an av container)
    import av

    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise ClipError(f"cannot decode the audio ({_reason(exc)})") from None
    if not container.streams.audio:
        container.close()
        raise ClipError("no audio stream in the file")
    return container


def _pyav_info(path: Path) -> tuple[int, int, int]:
    """Frames, rate and channels; the length from the stream's duration, or counted by decoding where the file
    does not say it."""
    with _open(path) as container:
        stream = container.streams.audio[0]
        rate, channels = int(stream.rate or stream.codec_context.sample_rate), int(stream.channels)
        if stream.duration and stream.time_base:
            return int(round(float(stream.duration * stream.time_base) * rate)), rate, channels
        if container.duration:
            return int(round(container.duration / 1_000_000 * rate)), rate, channels
    return len(_pyav_frames(path, 0, None)), rate, channels


def _pyav_frames(path: Path, start: int, count: int | None) -> np.ndarray:
    """Mono float64 samples from ``start`` (``count`` of them, or to the end), decoded frame by frame and kept only
    within the range, so memory holds the range, not the file."""
    import av

    end = None if count is None else start + count
    parts: list[np.ndarray] = []
    position = 0
    with _open(path) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="dblp", layout=stream.layout, rate=stream.rate)
        try:
            for packet_frame in container.decode(stream):
                for frame in resampler.resample(packet_frame):
                    planes = frame.to_ndarray()  # channels x samples
                    n = planes.shape[1]
                    lo, hi = max(start - position, 0), n if end is None else min(end - position, n)
                    if hi > lo:
                        parts.append(planes[:, lo:hi].mean(axis=0))
                    position += n
                if end is not None and position >= end:
                    break
        except (av.FFmpegError, ValueError) as exc:
            raise ClipError(f"cannot decode the audio ({_reason(exc)})") from None
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
