"""RAVDESS from the raw release (real WAV and MP4 files) and from the reference's arrays; errors named."""

import math
from pathlib import Path

import av
import numpy as np
import soundfile
from source_pipeline import check_eval_files, invoke, prepare_fails, run_all_stages, write_params

from mstcli.data.store import FeatureFile

W, H, FPS = 64, 48, 30
BOX = (slice(8, 32), slice(20, 44))  # the fixed crop of a 48 x 64 frame: side H/2, top H/6, centred
WAV_RATE = 16000


def write_mp4(path: Path, frames: int, level: int = 0) -> None:
    """Frame k is dark outside the crop box and RGB (20 + k + level, 200, 250 - k - level) inside it (lossless 4:4:4
    H.264, colours within 2 levels): red rises and blue falls with k, so the channel order shows; ``level`` tells
    the recordings apart."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"  # no chroma subsampling: exact colours
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for k in range(frames):
            image = np.full((H, W, 3), 20, dtype=np.uint8)
            image[BOX] = (20 + k + level, 200, 250 - k - level)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_wav(path: Path, pieces: list[tuple[float, float]]) -> None:
    """Consecutive tones, each (frequency Hz, seconds), 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.concatenate([0.5 * np.sin(2 * np.pi * f * np.arange(int(s * WAV_RATE)) / WAV_RATE) for f, s in pieces])
    soundfile.write(path, wave, WAV_RATE, subtype="PCM_16")


def level(actor: int, emotion: int) -> int:
    """The box colour offset of a recording's video."""
    return 8 * (emotion - 1) + 60 * (actor - 1)


def seconds(actor: int, emotion: int) -> float:
    """The length of a recording's one tone: 0.4 s to 1.9 s in steps of 0.1 s, a different one per recording."""
    return round(0.4 + 0.1 * (8 * (actor - 1) + emotion - 1), 1)


def frame_count(actor: int, emotion: int, short_clip: str = "02-08") -> int:
    return 60 if f"{actor:02d}-{emotion:02d}" == short_clip else 110


def write_release(root: Path, actors=(1, 2), short_clip="02-08") -> Path:
    """Actor folders of the audio and the video downloads; one speech recording per (actor, emotion). The WAV's tone
    (pitch by emotion, length by recording) and the MP4's box colour (by recording) tell which recording a row is."""
    for actor in actors:
        for emotion in range(1, 9):
            key = f"01-{emotion:02d}-01-01-01-{actor:02d}"
            long_clip = actor == 1 and emotion == 3
            pieces = (
                [(300, 0.7), (1200, 3.6), (3000, 0.7)]
                if long_clip
                else [(200.0 + 150 * emotion, seconds(actor, emotion))]
            )
            write_wav(root / f"Audio_Speech_Actors_01-24/Actor_{actor:02d}/03-{key}.wav", pieces)
            frames = frame_count(actor, emotion, short_clip)
            write_mp4(
                root / f"Video_Speech_Actor_{actor:02d}/Actor_{actor:02d}/01-{key}.mp4", frames, level(actor, emotion)
            )
    # song recordings (vocal channel 02) are not part of the speech set
    write_wav(root / "Audio_Song_Actors_01-24/Actor_01/03-02-01-01-01-01-01.wav", [(500, 1.0)])
    write_mp4(root / "Video_Song_Actor_01/Actor_01/01-02-01-01-01-01-01.mp4", 10)
    return root


def first_silent_frame(mfcc: np.ndarray) -> int:
    """The first MFCC frame from which on every frame equals the last one (the zero padding's floor); the last
    frame's own index when no frame before it equals it."""
    same = np.all(np.abs(mfcc - mfcc[:, -1:]) < 1e-6, axis=0)
    return len(same) - int(np.argmin(same[::-1]))


def test_ravdess_release_is_paired_cropped_and_runs(tmp_path, monkeypatch):
    source = write_release(tmp_path / "ravdess")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "ravdess", source, {"frame_size": 16})
    invoke("prepare")
    path = tmp_path / "data/features/ravdess.h5"
    features = FeatureFile.open(path)
    assert features.modalities == {"visual": (15, 3, 16, 16), "audio": (15, 156)}
    assert features.class_names == ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    assert features.labels().tolist() == list(range(8)) * 2  # actor 1's emotions, then actor 2's
    recordings = [(actor, emotion) for actor in (1, 2) for emotion in range(1, 9)]  # row i is recording i

    # visual, by hand: frames 3, 10, 17, ..., 103 of the recording's own video (0 past its end), the box only, BGR,
    # then min-max per colour channel over the whole data set
    numbers = [int(3 + i * 3.6 * FPS / 15) for i in range(15)]  # the reference's 3, 10, 17, ..., 103
    raw = np.zeros((16, 15, 3))
    for row, (actor, emotion) in enumerate(recordings):
        for j, n in enumerate(numbers):
            if n < frame_count(actor, emotion):
                red, blue = 20 + n + level(actor, emotion), 250 - n - level(actor, emotion)
                raw[row, j] = (blue, 200, red)
    lo, hi = raw.min(axis=(0, 1)), raw.max(axis=(0, 1))
    expected = (raw - lo) / (hi - lo)
    visual = features.read("visual")
    assert visual.std(axis=(3, 4)).max() < 0.01, "the crop must hold only the box (no dark background)"
    error = np.abs(visual.mean(axis=(3, 4)) - expected) * (hi - lo)  # in colour levels
    assert error.max() <= 2.5, f"off by {error.max():.1f} levels at {np.unravel_index(error.argmax(), error.shape)}"
    # (recordings of adjacent levels differ by 8 colour levels in red and blue: a row from another recording fails)

    # audio: MFCCs of the recording's own tone, zero-padded to 3.6 s (or its centre 3.6 s), min-max per sample
    audio = features.read("audio")
    assert np.allclose(audio.min(axis=(1, 2)), 0) and np.allclose(audio.max(axis=(1, 2)), 1)
    for row, (actor, emotion) in enumerate(recordings):
        if (actor, emotion) == (1, 3):
            continue
        # the tone ends at sample `end` at 22,050 Hz; frame t (hop 512) windows samples t * 512 - 1024 ... + 1023, so
        # from frame `first` on a frame holds padding only (one frame earlier, the Hann window's edge leaves the
        # last few tone samples under the 80 dB floor). Recordings differ by 0.1 s = 4.3 frames.
        end = seconds(actor, emotion) * 22050
        first = math.ceil((end + 1024) / 512)
        assert abs(first_silent_frame(audio[row]) - first) <= 1, (row, first_silent_frame(audio[row]), first)
    centred = audio[2]  # 0.7 s + 3.6 s + 0.7 s: the centre crop keeps only the middle tone
    assert np.abs(centred[:, 5:150] - centred[:, 78:79]).max() < 0.05
    assert first_silent_frame(centred) == 155  # no zero padding

    run_all_stages(tmp_path, "visual")
    metrics = check_eval_files(tmp_path, "visual", path, "visual")
    assert metrics["n_test"] == 16 - int(0.8 * 16)


def test_ravdess_arrays_are_scaled_like_the_reference(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    folder = tmp_path / "src/RAVDESS_preprocessed_npy"
    folder.mkdir(parents=True)
    video = rng.integers(0, 256, (12, 15, 3, 8, 8)).astype(np.float32) * np.array([1, 0.5, 0.25])[:, None, None]
    audio = rng.normal(size=(12, 15, 156)).astype(np.float32)
    labels = np.arange(12) % 8
    np.save(folder / "video_data.npy", video)
    np.save(folder / "audio_data.npy", audio)
    np.save(folder / "label_data.npy", labels)
    monkeypatch.chdir(tmp_path)
    invoke("prepare", "--dataset", "ravdess", "--source", str(tmp_path / "src"))
    features = FeatureFile.open(tmp_path / "data/features/ravdess.h5")
    lo = video.min(axis=(0, 1, 3, 4), keepdims=True)[0]
    hi = video.max(axis=(0, 1, 3, 4), keepdims=True)[0]
    np.testing.assert_allclose(features.read("visual"), (video - lo) / (hi - lo), atol=1e-6)
    a = audio[4]
    np.testing.assert_allclose(features.read("audio", np.array([4]))[0], (a - a.min()) / (a.max() - a.min()), atol=1e-6)
    assert features.labels().tolist() == labels.tolist()

    np.save(folder / "label_data.npy", labels[:5])
    message = prepare_fails("--dataset", "ravdess", "--source", str(tmp_path / "src"))
    assert "video_data.npy: video (N x F x 3 x S x S) must have shape 5xNx3xNxN, got 12x15x3x8x8" in message


def test_ravdess_release_errors_name_the_file(tmp_path):
    source = write_release(tmp_path / "a", actors=(1,))
    mp4 = next(source.rglob("01-01-05-01-01-01-01.mp4"))
    mp4.unlink()
    message = prepare_fails("--dataset", "ravdess", "--source", str(source))
    assert "01-01-05-01-01-01-01.mp4: missing" in message

    write_mp4(mp4, 5)
    bad = mp4.parent / "01-01-xx-01-01-01-01.mp4"
    bad.write_bytes(b"")
    assert "01-01-xx-01-01-01-01.mp4: not a RAVDESS file name" in prepare_fails(
        "--dataset", "ravdess", "--source", str(source)
    )
    bad.unlink()
    wav = next(source.rglob("03-01-02-01-01-01-01.wav"))
    wav.write_bytes(b"not a wave file")
    assert "03-01-02-01-01-01-01.wav: not a readable WAV" in prepare_fails(
        "--dataset", "ravdess", "--source", str(source)
    )
    (tmp_path / "empty/Actor_01").mkdir(parents=True)
    assert "no RAVDESS speech files" in prepare_fails("--dataset", "ravdess", "--source", str(tmp_path / "empty"))
