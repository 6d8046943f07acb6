"""RAVDESS from the raw release (real WAV and MP4 files) and from the reference's arrays; errors named."""

from pathlib import Path

import av
import numpy as np
import soundfile

from mstcli.data.store import FeatureFile
from source_pipeline import invoke, prepare_fails, run_all_stages, write_params

W, H, FPS = 64, 48, 30
BOX = (slice(8, 32), slice(20, 44))  # the fixed crop of a 48 x 64 frame: side H/2, top H/6, centred
WAV_RATE = 16000


def write_mp4(path: Path, frames: int) -> None:
    """Frame k is dark outside the crop box and has grey level 40 + k inside it (lossless H.264)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"qp": "0", "preset": "ultrafast"}
        for k in range(frames):
            image = np.full((H, W, 3), 20, dtype=np.uint8)
            image[BOX] = 40 + k
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_wav(path: Path, pieces: list[tuple[float, float]]) -> None:
    """Consecutive tones, each (frequency Hz, seconds), 16-bit PCM."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = np.concatenate([0.5 * np.sin(2 * np.pi * f * np.arange(int(s * WAV_RATE)) / WAV_RATE) for f, s in pieces])
    soundfile.write(path, wave, WAV_RATE, subtype="PCM_16")


def write_release(root: Path, actors=(1, 2), short_clip="02-08") -> Path:
    """Actor folders of the audio and the video downloads; one speech recording per (actor, emotion)."""
    for actor in actors:
        for emotion in range(1, 9):
            key = f"01-{emotion:02d}-01-01-01-{actor:02d}"
            long_clip = actor == 1 and emotion == 3
            pieces = [(300, 0.7), (1200, 3.6), (3000, 0.7)] if long_clip else [(200.0 + 150 * emotion, 1.0)]
            write_wav(root / f"Audio_Speech_Actors_01-24/Actor_{actor:02d}/03-{key}.wav", pieces)
            frames = 60 if f"{actor:02d}-{emotion:02d}" == short_clip else 110
            write_mp4(root / f"Video_Speech_Actor_{actor:02d}/Actor_{actor:02d}/01-{key}.mp4", frames)
    # song recordings (vocal channel 02) are not part of the speech set
    write_wav(root / "Audio_Song_Actors_01-24/Actor_01/03-02-01-01-01-01-01.wav", [(500, 1.0)])
    write_mp4(root / "Video_Song_Actor_01/Actor_01/01-02-01-01-01-01-01.mp4", 10)
    return root


def test_ravdess_release_is_paired_cropped_and_runs(tmp_path, monkeypatch):
    source = write_release(tmp_path / "ravdess")
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, "ravdess", source, {"frame_size": 16})
    invoke("prepare")
    features = FeatureFile.open(tmp_path / "data/features/ravdess.h5")
    assert features.modalities == {"visual": (15, 3, 16, 16), "audio": (15, 156)}
    assert features.labels().tolist() == list(range(8)) * 2  # actor 1's emotions, then actor 2's

    visual = features.read("visual")
    numbers = [int(3 + i * 3.6 * FPS / 15) for i in range(15)]  # the reference's 3, 10, 17, ..., 103
    frame_means = visual[0].mean(axis=(1, 2, 3))
    expected = [(n - numbers[0]) / (numbers[-1] - numbers[0]) for n in numbers]
    got = (frame_means - frame_means[0]) / (frame_means[-1] - frame_means[0])
    np.testing.assert_allclose(got, expected, atol=0.02)
    assert visual[0].std(axis=(2, 3)).max() < 0.02, "the crop must hold only the box (no dark background)"
    short = visual[15]  # actor 2, emotion 8 has 60 frames: frames 67, 75, ... are missing and stay 0
    assert np.all(short[[n >= 60 for n in numbers]] == 0) and short[0].min() > 0.1

    audio = features.read("audio")
    assert np.allclose(audio.min(axis=(1, 2)), 0) and np.allclose(audio.max(axis=(1, 2)), 1)
    padded = audio[0]  # 1 s of tone, zero-padded to 3.6 s: the frames after the tone are identical
    tail = padded[:, 50:]
    assert np.abs(tail - tail[:, :1]).max() < 1e-5 and np.abs(padded[:, 20] - tail[:, 0]).max() > 0.03
    centred = audio[2]  # 0.7 s + 3.6 s + 0.7 s: the centre crop keeps only the middle tone
    assert np.abs(centred[:, 5:150] - centred[:, 78:79]).max() < 0.05

    metrics = run_all_stages(tmp_path, "visual")
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
