"""What each kind of file in a user's folder becomes: one fixed-shape float32 feature row per sample.

The same functions serve ``mst prepare`` (in worker processes, chunk by chunk) and ``mst predict`` (one new file
at a time), so a prediction sees exactly the features training saw:

* image (.png .jpg .jpeg .bmp .webp .tif .tiff .gif, decoded by Pillow): grayscale or RGB, scaled to [0, 1],
  resized to ``image_size`` x ``image_size`` (bilinear with antialiasing; the aspect ratio is not kept) -> C x S x S;
* audio (.wav .flac .ogg .mp3 .opus .m4a, read by data/clips.py): mixed to mono, resampled, centred in a window of
  ``clip_seconds`` (longer clips keep their middle) -> a log-mel spectrogram min-max scaled per clip, 1 x S x S;
* array (.npy): as stored, float32; every row of a modality must have the same shape;
* text (a ``_text`` column or .txt files): the string; the frozen text encoder runs in the parent process.

Where torchvision or Hugging Face nets read a modality, its rows are their raw inputs instead (net_inputs.py
decides): images as uint8 RGB pixels (:func:`pixel_row`, the same resize), texts as token ids, clips as the
window alone, which the parent passes through the Hugging Face feature extractor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class DecodeError(Exception):
    """One file cannot become a feature row; the message is the reason shown with the row."""


@dataclass(frozen=True)
class KindSettings:
    """What featurizing needs, fixed before the first row is decoded (picklable, for the worker processes)."""

    image_size: int = 32
    image_channels: int = 1
    sample_rate: int = 16000
    clip_seconds: float = 1.0
    spec_size: int = 32
    array_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # modality -> shape of its .npy rows

    @property
    def window(self) -> int:
        return int(round(self.clip_seconds * self.sample_rate))


def _reason(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]


GRAY_MODES = ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F")


def image_channels_of(path: Path) -> int:
    """1 for a grayscale image (with or without alpha), 3 otherwise (read from the header: nothing decoded), for
    prepare.image_mode auto, which keeps a folder in RGB when any image of its sample is in colour."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            if image.mode == "P":  # a palette (GIF, some PNGs): gray only when every entry is
                palette = np.asarray(image.getpalette() or [], dtype=np.int64).reshape(-1, 3)
                return 1 if (palette == palette[:, :1]).all() else 3
            return 1 if image.mode in GRAY_MODES else 3
    except OSError as exc:
        raise DecodeError(f"not a readable image ({_reason(exc)})") from None


def decode_image(path: Path, channels: int) -> Any:
    """C x H x W float tensor in [0, 1] (C = ``channels``), turned upright as its EXIF orientation says (a phone
    stores a portrait photo as landscape pixels plus that tag); 16-bit grayscale keeps its depth."""
    import torch
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            image = ImageOps.exif_transpose(opened)
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float32) / 65535.0
                array = np.repeat(array[..., None], channels, axis=-1)
            else:
                array = np.asarray(image.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"cannot decode the image ({_reason(exc)})") from None
    if array.size == 0:
        raise DecodeError("empty image")
    return torch.from_numpy(np.ascontiguousarray(array.reshape(array.shape[0], array.shape[1], -1))).permute(2, 0, 1)


def resize_image(pixels: Any, size: int) -> np.ndarray:
    """C x size x size float32: bilinear with antialiasing, aspect ratio not kept (as ``Resize((S, S))``)."""
    import torch

    with torch.no_grad():
        out = torch.nn.functional.interpolate(
            pixels[None], size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )[0]
    return out.clamp_(0.0, 1.0).numpy()


def image_row(path: Path, settings: KindSettings) -> np.ndarray:
    return resize_image(decode_image(path, settings.image_channels), settings.image_size)


def pixel_row(path: Path, size: int) -> np.ndarray:
    """3 x size x size uint8 RGB: the image path of :func:`image_row` (RGB, grayscale repeated, bilinear resize
    with antialiasing, aspect not kept) rounded back to 0..255, for nets that normalize their own pixels
    (torchvision, Hugging Face): a quarter of the float rows' bytes, and what a camera gives them at predict time."""
    resized = resize_image(decode_image(path, 3), size)
    return np.rint(resized * 255.0).astype(np.uint8)


def read_clip(path: Path) -> tuple[np.ndarray, int]:
    """The whole clip, mono float64 samples and the sample rate (data/clips.py, the reader predict uses too)."""
    from mstcli.data.clips import ClipError
    from mstcli.data.clips import read_clip as read_whole

    try:
        return read_whole(path)
    except ClipError as exc:
        raise DecodeError(str(exc)) from None


def clip_window(samples: np.ndarray, rate: int, settings: KindSettings) -> np.ndarray:
    """Samples already read, at the folder's sample rate, centred in the window: a shorter clip is zero-padded on
    both sides ((window - n) // 2 zeros before it), a longer one keeps its middle (from (n - window) // 2)."""
    from mstcli.data.clips import centre_in_window, resample

    out = centre_in_window(resample(samples, rate, settings.sample_rate), settings.window)
    if not np.isfinite(out).all():
        raise DecodeError("the audio holds NaN or Inf samples")
    return out


def window_row(path: Path, settings: KindSettings) -> np.ndarray:
    """The clip of ``path`` as :func:`clip_window` cuts it, decoding only the frames the window needs: what
    prepare's workers and ``mst predict`` both run, so an hour-long file costs its window."""
    from mstcli.data.clips import ClipError, read_window

    try:
        return read_window(path, settings.sample_rate, settings.window)
    except ClipError as exc:
        raise DecodeError(str(exc)) from None


def log_mel_layers(settings: KindSettings) -> tuple[Any, Any]:
    """The torchaudio mel spectrogram and dB conversion of a folder's clips, built in one place for prepare,
    predict and ``mst export``'s graph. S frames cover the window with half-overlapping analysis windows (hop =
    window / S, window = 2 hops), so that every sample is seen whatever the rate; S mel bands from 20 Hz to half
    the sample rate."""
    import torchaudio

    size, window = settings.spec_size, settings.window
    hop = max(1, window // size)
    win = min(window, 2 * hop)
    n_fft = 1 << max(8, (win - 1).bit_length())
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=settings.sample_rate, n_fft=n_fft, win_length=win, hop_length=hop, n_mels=size, f_min=20.0
    )
    return mel, torchaudio.transforms.AmplitudeToDB(stype="power", top_db=80.0)


def log_mel_rows(waves: np.ndarray, settings: KindSettings) -> np.ndarray:
    """N x 1 x S x S log-mel spectrograms (S mel bands x S frames), min-max scaled per clip.

    The spectrogram goes through torchaudio with a channel axis, so that AmplitudeToDB's 80 dB floor is taken per
    clip: without it the floor is the whole batch's, and a clip's features would depend on its neighbours."""
    import torch

    from mstcli.data.audio import minmax_per_sample

    size = settings.spec_size
    mel, to_db = log_mel_layers(settings)
    with torch.no_grad():
        spec = to_db(mel(torch.from_numpy(np.ascontiguousarray(waves, dtype=np.float32))[:, None]))
    return minmax_per_sample(spec[:, :, :, :size].numpy())


def array_row(path: Path, shape: tuple[int, ...] | None) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DecodeError(f"not a readable .npy array ({_reason(exc)})") from None
    if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise DecodeError(f"an array of {array.dtype}, not real numbers")
    if shape is not None and tuple(array.shape) != tuple(shape):
        raise DecodeError(
            f"an array of shape {'x'.join(map(str, array.shape)) or 'scalar'}, the modality's first row has "
            f"{'x'.join(map(str, shape)) or 'scalar'} (every row must have the same shape)"
        )
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise DecodeError("the array holds NaN or Inf")
    return array


def read_text_file(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DecodeError("not a UTF-8 text file") from None
    except OSError as exc:
        raise DecodeError(f"cannot read ({_reason(exc)})") from None
    if not text.strip():
        raise DecodeError("empty text")
    return text
