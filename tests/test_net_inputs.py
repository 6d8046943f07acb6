"""A folder modality is stored in the form its nets read (mstcli/data/folder/net_inputs.py): float32 features for
mst's own nets and factories (bit for bit as before), uint8 RGB pixels for torchvision and Hugging Face image
nets, int64 token ids and masks for a Hugging Face text net, a feature extractor's output for a Hugging Face audio
net. The feature file keeps those types through loading, predict featurizes a new file the same way, and
check_inputs refuses a file made for other nets. Tiny Hugging Face folders are made here, offline."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from cli_result import one_line_error
from folder_fixtures import NAMES, RATE, write_table, write_wav
from typer.testing import CliRunner

from mstcli.cli import app
from mstcli.config import ModelsParams, NetChoice, parse_net_choice
from mstcli.data.folder.kinds import KindSettings, clip_window, image_row, log_mel_rows, read_clip
from mstcli.data.folder.net_inputs import Readers, check_inputs
from mstcli.data.readers import RawInput, read_input
from mstcli.data.sources import get_source
from mstcli.data.store import FeatureFile, FeatureWriter, write_features
from mstcli.errors import UserError

runner = CliRunner()
SMALL = ["-S", "prepare.image_size=8", "-S", "prepare.spec_size=8", "-S", "prepare.clip_seconds=0.25",
         "-S", "prepare.sample_rate=8000", "-S", "common.threads=1", "-S", "prepare.text_max_length=8"]  # fmt: skip
WORDS = ["a", "red", "ripe", "sweet"]


# ---- tiny folders ------------------------------------------------------------------------------------------------


def textured_png(path: Path, row: int, rgb: bool) -> np.ndarray:
    """A 12 x 14 image whose pixels differ everywhere (a resize of it is a real interpolation), RGB or gray."""
    from PIL import Image

    rng = np.random.default_rng(row)
    pixels = rng.integers(0, 256, (12, 14, 3) if rgb else (12, 14), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def make_folder(root: Path, per_class: int = 4) -> list[dict]:
    """Textured PNGs (every third one grayscale), tone WAVs at 8 kHz and an inline text per row."""
    rows = []
    for i in range(per_class * len(NAMES)):
        label = i % len(NAMES)
        textured_png(root / "pics" / f"{i:03d}.png", i, rgb=i % 3 != 0)
        write_wav(root / "sounds" / f"{i:03d}.wav", label)
        text = " ".join([WORDS[i % len(WORDS)], NAMES[label]] * (1 + i % 4))  # 2 to 8 words: below and above L
        rows.append({"image_file_name": f"pics/{i:03d}.png", "audio_file_name": f"sounds/{i:03d}.wav",
                     "caption_text": text, "label": NAMES[label]})  # fmt: skip
    write_table(root / "metadata.csv", rows)
    return rows


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> tuple[Path, list[dict]]:
    root = tmp_path_factory.mktemp("pairs") / "f"
    return root, make_folder(root)


@pytest.fixture(scope="module")
def plain(folder) -> tuple[Path, list[dict]]:
    """The same files without the text column (text as features needs a text encoder, not the subject here)."""
    root, rows = folder
    target = root.parent / "plain"
    target.mkdir()
    for sub in ("pics", "sounds"):
        (target / sub).symlink_to(root / sub)
    table = [{k: v for k, v in r.items() if k != "caption_text"} for r in rows]
    write_table(target / "metadata.csv", table)
    return target, table


@pytest.fixture(scope="module")
def hf(tmp_path_factory) -> dict[str, Path]:
    """Tiny Hugging Face folders: ViT with a 32 x 32 processor, ViT without a processor (config image_size 16),
    BERT with its tokenizer, BERT without tokenizer files, wav2vec2 with and without an extractor, and a
    Whisper-style extractor (a 2-D map per clip)."""
    import transformers as tf

    root = tmp_path_factory.mktemp("hf")
    torch.manual_seed(0)
    vit = {"patch_size": 8, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 37}  # fmt: skip
    tf.ViTModel(tf.ViTConfig(image_size=32, **vit)).save_pretrained(root / "vit32")
    tf.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(root / "vit32")
    tf.ViTModel(tf.ViTConfig(image_size=16, **vit)).save_pretrained(root / "vit16")

    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *NAMES]) + "\n")
    bert = tf.BertConfig(vocab_size=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37, max_position_embeddings=64)  # fmt: skip
    for name in ("bert", "bert_copy"):
        tf.BertTokenizer(str(vocab)).save_pretrained(root / name)
        tf.BertModel(bert).save_pretrained(root / name)
    tf.BertModel(bert).save_pretrained(root / "bert_untokenized")

    w2v = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                            conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 4),
                            num_feat_extract_layers=2)  # fmt: skip
    tf.Wav2Vec2Model(w2v).save_pretrained(root / "w2v")
    tf.Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True).save_pretrained(root / "w2v")
    tf.Wav2Vec2Model(w2v).save_pretrained(root / "w2v_raw")

    tf.WhisperConfig(d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                     decoder_attention_heads=2, num_mel_bins=8).save_pretrained(root / "whisper")  # fmt: skip
    tf.WhisperFeatureExtractor(feature_size=8, sampling_rate=16000, hop_length=160, chunk_length=1,
                               n_fft=400).save_pretrained(root / "whisper")  # fmt: skip
    return {p.name: p for p in root.iterdir() if p.is_dir()}


def prepare(source: Path, out: Path, *sets: str):
    return runner.invoke(
        app, ["prepare", "--dataset", "folder", "--source", str(source), "--out", str(out), *SMALL, *sets]
    )


def prepared(source: Path, out: Path, *sets: str) -> FeatureFile:
    result = prepare(source, out, *sets)
    assert result.exit_code == 0, result.output
    return FeatureFile.open(out)


def encoder(modality: str, net: str) -> list[str]:
    return ["-S", f"models.encoders.{modality}={net}"]


# ---- the feature file keeps uint8 and int64 ----------------------------------------------------------------------


def test_writer_stores_three_types_and_the_file_reports_them(tmp_path):
    arrays = {
        "x": np.linspace(0, 1, 24 * 4, dtype=np.float32).reshape(24, 4),
        "pixels": np.arange(24 * 3, dtype=np.int64).reshape(24, 3).astype(np.uint8),
        "tokens": (np.arange(24 * 2, dtype=np.int64).reshape(24, 2) + 2**40),
    }
    write_features(tmp_path / "f.h5", dataset="t", arrays=arrays, labels=np.arange(24) % 3, class_names=list("abc"),
                   params={}, dtypes={"pixels": "uint8", "tokens": "int64"})  # fmt: skip
    features = FeatureFile.open(tmp_path / "f.h5")
    assert features.dtypes == {"x": "float32", "pixels": "uint8", "tokens": "int64"}
    for name, array in arrays.items():
        read = features.read(name, np.array([5, 1, 7]))
        assert read.dtype == array.dtype and np.array_equal(read, array[[5, 1, 7]])


@pytest.mark.parametrize(
    ("dtype", "block", "culprit"),
    [
        ("uint8", np.full((2, 3), 1.5, dtype=np.float32), "float32"),
        ("uint8", np.full((2, 3), 300, dtype=np.int64), "range of uint8"),
        ("int32", np.zeros((2, 3), dtype=np.int32), "int32"),
    ],
)
def test_writer_never_truncates_into_an_integer_modality(tmp_path, dtype, block, culprit):
    with pytest.raises(ValueError, match=culprit):
        with FeatureWriter(tmp_path / "f.h5", dataset="t", modalities={"m": (3,)}, num_samples=2, class_names=["a"],
                           params={}, dtypes={"m": dtype}) as writer:  # fmt: skip
            writer.write("m", 0, block)
            writer.write_labels(np.zeros(2, dtype=np.int64))
    assert not (tmp_path / "f.h5").exists()


def test_a_file_of_another_type_is_refused_in_one_line(tmp_path):
    write_features(tmp_path / "f.h5", dataset="t", arrays={"m": np.zeros((24, 2), np.float32)},
                   labels=np.arange(24) % 2, class_names=["a", "b"], params={})  # fmt: skip
    with h5py.File(tmp_path / "f.h5", "a") as f:
        del f["modalities/m"]
        f["modalities/m"] = np.zeros((24, 2), dtype=np.int32)
    with pytest.raises(UserError, match="modality 'm' is int32, expected float32, uint8, int64"):
        FeatureFile.open(tmp_path / "f.h5")


def old_fingerprint(features: FeatureFile) -> str:
    """The fingerprint as mst computed it before modalities had types (float32 files must keep theirs)."""
    digest = hashlib.sha1()
    header = {"dataset": features.dataset, "params": features.params,
              "modalities": {m: list(s) for m, s in features.modalities.items()},
              "class_names": list(features.class_names), "num_samples": features.num_samples}  # fmt: skip
    digest.update(json.dumps(header, sort_keys=True).encode())
    with h5py.File(features.path, "r") as f:
        digest.update(np.ascontiguousarray(f["labels"][:], dtype=np.int64).tobytes())
        rows = np.unique(np.linspace(0, features.num_samples - 1, 16).round().astype(np.int64))
        for m in features.modalities:
            digest.update(np.ascontiguousarray(f["modalities"][m][rows], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


def test_float32_files_keep_their_fingerprint_and_typed_ones_differ(tmp_path):
    from mstcli.data.fingerprint import feature_fingerprint

    rng = np.random.default_rng(0)
    common = {"labels": np.arange(40) % 4, "class_names": list("abcd"), "params": {"p": 1}}
    write_features(tmp_path / "f.h5", dataset="t", arrays={"m": rng.random((40, 3, 2), dtype=np.float32)}, **common)
    plain = FeatureFile.open(tmp_path / "f.h5")
    assert feature_fingerprint(plain) == old_fingerprint(plain)

    pixels = rng.integers(0, 256, (40, 3, 2), dtype=np.uint8)
    write_features(tmp_path / "u.h5", dataset="t", arrays={"m": pixels}, dtypes={"m": "uint8"}, **common)
    write_features(tmp_path / "g.h5", dataset="t", arrays={"m": pixels.astype(np.float32)}, **common)
    typed, floats = FeatureFile.open(tmp_path / "u.h5"), FeatureFile.open(tmp_path / "g.h5")
    assert feature_fingerprint(typed) != feature_fingerprint(floats), "same values, another type: another file"


@pytest.mark.parametrize("memory_mb", [4096, 1e-6], ids=["in memory", "lazy"])
def test_splits_keep_the_stored_types(tmp_path, memory_mb):
    from mstcli.engine.splits import load_splits, split_bytes

    rng = np.random.default_rng(1)
    arrays = {"f": rng.random((30, 4), dtype=np.float32), "u": rng.integers(0, 256, (30, 3, 4, 4), dtype=np.uint8),
              "t": rng.integers(0, 30000, (30, 2, 6), dtype=np.int64)}  # fmt: skip
    write_features(tmp_path / "f.h5", dataset="t", arrays=arrays, labels=np.arange(30) % 3, class_names=list("abc"),
                   params={}, dtypes={"u": "uint8", "t": "int64"})  # fmt: skip
    features = FeatureFile.open(tmp_path / "f.h5")
    assert split_bytes(features, ["f", "u", "t"], 10) == 10 * (4 * 4 + 48 + 8 * 12)
    splits = load_splits(features, 0, ["f", "u", "t"], torch.device("cpu"), memory_mb=memory_mb)
    rows = features.split_indices(0)["train"]
    batch = splits["train"].batch(torch.arange(len(rows)))
    expected = {"f": torch.float32, "u": torch.uint8, "t": torch.int64}
    for name, dtype in expected.items():
        assert batch.inputs[name].dtype == dtype
        assert np.array_equal(batch.inputs[name].numpy(), arrays[name][rows])


def test_list_attributes_of_a_state_read_back_as_lists(tmp_path):
    transforms = {"m": {"made_for": ["auto"], "nets": ["a", "b"], "size": 3, "name": "x"}}
    write_features(tmp_path / "f.h5", dataset="t", arrays={"m": np.zeros((24, 1), np.float32)},
                   labels=np.arange(24) % 2, class_names=["a", "b"], params={}, transforms=transforms)  # fmt: skip
    assert FeatureFile.open(tmp_path / "f.h5").transform("m") == transforms["m"]


# ---- what prepare stores, per reader ----------------------------------------------------------------------------


def test_all_auto_and_factory_readers_store_todays_features_bit_for_bit(plain, tmp_path):
    root, rows = plain
    auto = prepared(root, tmp_path / "auto.h5")
    # image_mode auto keeps colour: row 0 is grayscale, row 1 RGB
    settings = KindSettings(image_size=8, image_channels=3, sample_rate=8000, clip_seconds=0.25, spec_size=8)
    images = np.stack([image_row(root / r["image_file_name"], settings) for r in rows])
    waves = np.stack([clip_window(*read_clip(root / r["audio_file_name"]), settings) for r in rows])
    assert auto.dtypes == {"image": "float32", "audio": "float32"}
    assert np.array_equal(auto.read("image"), images)
    assert np.array_equal(auto.read("audio"), log_mel_rows(waves, settings))
    assert auto.transform("image")["form"] == "features" and auto.transform("image")["made_for"] == ["auto"]

    factory = prepared(root, tmp_path / "factory.h5", *encoder("image", "my_nets:small"), "-S",
                       "models.student=my_nets:tiny")  # fmt: skip
    for name in ("image", "audio"):
        assert np.array_equal(factory.read(name), auto.read(name)) and factory.dtype(name) == "float32"
    assert factory.transform("image")["made_for"] == ["my_nets:small", "my_nets:tiny"]


def hand_resized_pixels(path: Path, size: int) -> np.ndarray:
    """The PNG as RGB (gray repeated) in [0, 1], bilinear with antialiasing to size x size, back to 0..255."""
    from PIL import Image

    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(rgb).permute(2, 0, 1)[None], size=(size, size), mode="bilinear", antialias=True
    )[0]
    return np.rint(resized.clamp(0, 1).numpy() * 255).astype(np.uint8)


def test_torchvision_image_reader_stores_uint8_rgb_pixels(plain, tmp_path):
    root, rows = plain
    features = prepared(root, tmp_path / "f.h5", *encoder("image", "torchvision:resnet18"))
    assert features.modalities["image"] == (3, 8, 8) and features.dtype("image") == "uint8"
    stored = features.read("image")
    for i, row in enumerate(rows):
        assert np.array_equal(stored[i], hand_resized_pixels(root / row["image_file_name"], 8)), i
    assert np.array_equal(stored[0][0], stored[0][2]), "a grayscale image becomes three equal channels"
    assert not np.array_equal(stored[1][0], stored[1][2]), "an RGB image keeps its channels"
    state = features.transform("image")
    assert state["form"] == "pixels" and state["size"] == 8 and state["processor"] == ""
    assert state["made_for"] == ["auto", "torchvision:resnet18"]  # the student (image) is auto
    assert features.dtype("audio") == "float32" and features.transform("audio")["form"] == "features"


def test_hf_vit_reader_takes_its_processors_size_or_its_configs(plain, hf, tmp_path):
    root, rows = plain
    vit = prepared(root, tmp_path / "a.h5", *encoder("image", f"hf:{hf['vit32']}"))
    assert vit.modalities["image"] == (3, 32, 32) and vit.dtype("image") == "uint8"
    expected = hand_resized_pixels(root / rows[4]["image_file_name"], 32)
    assert np.array_equal(vit.read("image", np.array([4]))[0], expected)
    assert vit.transform("image")["processor"] == str(hf["vit32"]) and vit.transform("image")["size"] == 32

    bare = prepared(root, tmp_path / "b.h5", "-S", f"models.student=hf:{hf['vit16']}")
    assert bare.modalities["image"] == (3, 16, 16)

    both = prepare(root, tmp_path / "c.h5", *encoder("image", f"hf:{hf['vit32']}"),
                   "-S", f"models.student=hf:{hf['vit16']}")  # fmt: skip
    one_line_error(both, "image", "different sizes", "32 x 32", "16 x 16")
    assert not (tmp_path / "c.h5").exists()


def test_hf_text_reader_stores_the_tokenizers_ids_and_mask(folder, hf, tmp_path):
    from transformers import AutoTokenizer

    root, rows = folder
    features = prepared(root, tmp_path / "f.h5", *encoder("caption", f"hf:{hf['bert']}"))
    assert features.modalities["caption"] == (2, 8) and features.dtype("caption") == "int64"
    assert [features.class_names[i] for i in features.labels()] == [r["label"] for r in rows], "table order"
    tokenizer = AutoTokenizer.from_pretrained(str(hf["bert"]), local_files_only=True)
    texts = [r["caption_text"] for r in rows]
    expected = tokenizer(texts, padding="max_length", truncation=True, max_length=8, return_tensors="np")
    stored = features.read("caption")
    assert np.array_equal(stored[:, 0], expected["input_ids"])
    assert np.array_equal(stored[:, 1], expected["attention_mask"])
    assert stored[:, 1].min() == 0 and stored[:, 1].all(axis=1).any(), "short texts padded, long ones cut to L"
    assert (stored[:, 0] == tokenizer.unk_token_id).sum() == 0, "every word is in the vocabulary"
    state = features.transform("caption")
    assert state["form"] == "tokens" and state["tokenizer"] == str(hf["bert"]) and state["max_length"] == 8
    assert state["vocab_size"] == len(tokenizer) and state["made_for"] == [f"hf:{hf['bert']}"]


@pytest.mark.parametrize(
    ("sets", "culprits"),
    [
        (["-S", "common.student=caption"], ("caption", "must agree", "auto")),  # the auto student beside hf
        (["-S", "common.student=caption", "-S", "models.student=hf:{bert_copy}"], ("caption", "must agree")),
        (["-S", "models.encoders.caption=torchvision:resnet18"], ("caption", "torchvision", "text")),
        (["-S", "models.encoders.caption=hf:{bert_untokenized}"], ("bert_untokenized", "tokenizer")),
    ],
    ids=["hf beside auto", "two tokenizers", "torchvision on text", "no tokenizer files"],
)
def test_text_nets_that_cannot_share_tokens_are_refused(folder, hf, tmp_path, sets, culprits):
    root, _ = folder
    sets = [s.format(**{k: str(v) for k, v in hf.items()}) for s in sets]
    result = prepare(root, tmp_path / "f.h5", *encoder("caption", f"hf:{hf['bert']}"), *sets)
    one_line_error(result, *culprits)
    assert not (tmp_path / "f.h5").exists()


def expected_clips(root: Path, rows: list[dict], rate: int) -> np.ndarray:
    """Each clip as prepare's workers cut it (kinds.clip_window), at ``rate``: 0.25 s, centred."""
    settings = KindSettings(sample_rate=rate, clip_seconds=0.25)
    return np.stack([clip_window(*read_clip(root / r["audio_file_name"]), settings) for r in rows])


def test_hf_wav2vec2_reader_stores_the_extractors_output(plain, hf, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    root, rows = plain
    features = prepared(root, tmp_path / "f.h5", *encoder("audio", f"hf:{hf['w2v']}"))
    assert features.modalities["audio"] == (4000,) and features.dtype("audio") == "float32"  # 0.25 s at 16 kHz
    clips = expected_clips(root, rows, 16000)
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)
    expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    assert np.allclose(features.read("audio"), expected, atol=1e-6)
    assert abs(float(features.read("audio")[0].std()) - 1) < 1e-2, "normalized: not the raw clip"
    state = features.transform("audio")
    assert (state["form"], state["key"], state["sample_rate"]) == ("waveform", "input_values", 16000)
    assert state["extractor"] == str(hf["w2v"]) and state["model"] == str(hf["w2v"])
    assert features.dtype("image") == "float32", "the image, read by auto nets only, stays features"


def test_hf_audio_without_extractor_stores_the_raw_window_and_whisper_a_map(plain, hf, tmp_path):
    from transformers import WhisperFeatureExtractor

    root, rows = plain
    raw = prepared(root, tmp_path / "raw.h5", *encoder("audio", f"hf:{hf['w2v_raw']}"))
    assert np.array_equal(raw.read("audio"), expected_clips(root, rows, 16000))
    assert raw.transform("audio")["form"] == "waveform" and raw.transform("audio")["extractor"] == ""

    whisper = prepared(root, tmp_path / "w.h5", *encoder("audio", f"hf:{hf['whisper']}"))
    extractor = WhisperFeatureExtractor.from_pretrained(str(hf["whisper"]))
    expected = extractor(list(expected_clips(root, rows, 16000)), sampling_rate=16000, return_tensors="np")
    assert whisper.modalities["audio"] == (8, 100) and whisper.transform("audio")["form"] == "extractor"
    assert whisper.transform("audio")["key"] == "input_features"
    assert np.allclose(whisper.read("audio"), expected["input_features"], atol=1e-6)


def test_hf_audio_beside_another_net_is_refused_and_torchvision_reads_log_mels(plain, hf, tmp_path):
    root, _ = plain
    mixed = prepare(root, tmp_path / "m.h5", *encoder("audio", f"hf:{hf['w2v']}"), "-S", "common.student=audio")
    one_line_error(mixed, "audio", "must agree", "auto")
    vision = prepared(root, tmp_path / "v.h5", *encoder("audio", "torchvision:resnet18"))
    auto = prepared(root, tmp_path / "a.h5")
    assert vision.transform("audio")["form"] == "features" and vision.dtype("audio") == "float32"
    assert np.array_equal(vision.read("audio"), auto.read("audio"))


def test_image_backbone_and_pixels_cannot_both_be_asked(plain, tmp_path):
    root, _ = plain
    result = prepare(root, tmp_path / "f.h5", *encoder("image", "torchvision:resnet18"),
                     "-S", "prepare.image_backbone=resnet50")  # fmt: skip
    one_line_error(result, "image", "image_backbone=none")


# ---- predict featurizes a new file as prepare did ----------------------------------------------------------------


@pytest.mark.parametrize("modality", ["image", "caption", "audio"])
def test_predicts_step_gives_a_training_files_stored_row(folder, plain, hf, tmp_path, modality):
    root, rows = folder if modality == "caption" else plain
    nets = {"image": "torchvision:resnet18", "caption": f"hf:{hf['bert']}", "audio": f"hf:{hf['w2v']}"}
    features = prepared(root, tmp_path / "f.h5", *encoder(modality, nets[modality]))
    state = features.transform(modality)
    step = get_source("folder").feature_step(modality, state)
    assert step is not None and step.reads == {"caption": "text"}.get(modality, modality)
    picked = [1, 6, 11]
    if modality == "caption":  # as `mst predict --text` gives it
        items = [RawInput("text", rows[i]["caption_text"]) for i in picked]
    else:
        items = [read_input(root / rows[i][f"{modality}_file_name"]) for i in picked]
    made = step.apply(items, features.params["prepare"], state)
    stored = features.read(modality, np.array(picked))
    assert made.dtype == stored.dtype and np.array_equal(made, stored)

    graph = step.graph(features.params["prepare"], state)  # mst export: the rows as prepare wrote them
    assert graph.inputs[0].shape == features.modalities[modality] and graph.rows_dtype == features.dtype(modality)
    example = graph.examples(3, np.random.default_rng(0))[0]
    assert example.dtype == np.dtype(features.dtype(modality)) and example.shape == (3, *features.modalities[modality])


def test_token_examples_of_the_export_check_are_valid_rows(folder, hf, tmp_path):
    root, _ = folder
    features = prepared(root, tmp_path / "f.h5", *encoder("caption", f"hf:{hf['bert']}"))
    state = features.transform("caption")
    graph = get_source("folder").feature_step("caption", state).graph({}, state)
    rows = graph.examples(20, np.random.default_rng(1))[0]
    ids, mask = rows[:, 0], rows[:, 1]
    assert ids.max() < state["vocab_size"] and set(np.unique(mask)) <= {0, 1}
    assert (np.diff(mask, axis=1) <= 0).all() and (ids[mask == 0] == 0).all(), "padding after the text, as prepared"


def test_info_shows_the_stored_type_and_form(plain, tmp_path):
    root, _ = plain
    prepared(root, tmp_path / "f.h5", *encoder("image", "torchvision:resnet18"))
    result = runner.invoke(app, ["info", str(tmp_path / "f.h5")])
    assert result.exit_code == 0, result.output
    assert "uint8" in result.output and "pixels" in result.output and "float32" in result.output


# ---- check_inputs: a file made for other nets --------------------------------------------------------------------


def readers(**nets: str) -> dict[str, list[NetChoice]]:
    """``image="torchvision:resnet18,auto"`` -> {"image": [the two choices]}."""
    return {m: [parse_net_choice(m, n) for n in spelled.split(",")] for m, spelled in nets.items()}


def accepted(features: FeatureFile, nets: dict[str, list[NetChoice]]) -> None:
    from mstcli.config import PrepareParams

    check_inputs(features, nets, PrepareParams())


def refused(features: FeatureFile, nets: dict[str, list[NetChoice]], *culprits: str) -> str:
    from mstcli.config import PrepareParams

    with pytest.raises(UserError) as caught:
        check_inputs(features, nets, PrepareParams())
    message = str(caught.value)
    assert "\n" not in message and "run `mst prepare` again" in message
    for culprit in culprits:
        assert culprit in message, (culprit, message)
    return message


def test_check_inputs_refuses_a_folder_file_made_for_other_nets(folder, hf, tmp_path):
    root, _ = folder
    features = prepared(root, tmp_path / "f.h5", *encoder("caption", f"hf:{hf['bert']}"),
                        *encoder("image", "torchvision:resnet18"))  # fmt: skip
    accepted(features, readers(image="torchvision:resnet18,auto", audio="auto", caption=f"hf:{hf['bert']}"))
    accepted(features, readers(image="torchvision:resnet50,my_nets:net", audio="torchvision:resnet18"))

    refused(features, readers(image="auto"), "'image'", "stored as pixels", "need features")
    refused(features, readers(caption="auto"), "'caption'", "stored as tokens", "need features")
    refused(features, readers(caption=f"hf:{hf['bert_copy']}"), "'caption'", "bert_copy")
    refused(features, readers(audio=f"hf:{hf['w2v']}"), "'audio'", "stored as features", "waveform")
    refused(features, readers(image=f"hf:{hf['vit32']}"), "'image'", "8 x 8", "32 x 32")


def test_check_inputs_compares_the_pixel_size_an_hf_net_wants(plain, hf, tmp_path):
    root, _ = plain
    features = prepared(root, tmp_path / "f.h5", *encoder("image", f"hf:{hf['vit32']}"))
    accepted(features, readers(image=f"hf:{hf['vit32']},torchvision:resnet18"))
    refused(features, readers(image=f"hf:{hf['vit16']}"), "'image'", "32 x 32", "16 x 16")


def test_check_inputs_refuses_text_features_to_an_hf_text_net(folder, hf, tmp_path):
    """A text modality prepared as features (its encoder auto) asked for by an hf text net, and an all-auto file
    asked for by torchvision and hf audio nets."""
    root, _ = folder
    features = prepared(root, tmp_path / "f.h5", "-S", f"prepare.text_model={hf['bert']}")
    assert features.dtype("caption") == "float32" and features.modalities["caption"] == (32,)
    accepted(features, readers(caption="auto,my_nets:net", image="auto", audio="auto"))
    refused(features, readers(caption=f"hf:{hf['bert']}"), "'caption'", "stored as features", "need tokens")
    refused(features, readers(image="torchvision:resnet18"), "'image'", "stored as features", "need pixels")
    refused(features, readers(audio=f"hf:{hf['whisper']}"), "'audio'", "waveform or extractor")


def test_check_inputs_on_a_builtin_data_set_refuses_only_hf_text_and_audio(hf, tmp_path):
    arrays = {"image": np.zeros((24, 1, 28, 28), np.float32), "audio": np.zeros((24, 1, 16, 16), np.float32)}
    write_features(tmp_path / "b.h5", dataset="avdigits", arrays=arrays, labels=np.arange(24) % 2,
                   class_names=["0", "1"], params={})  # fmt: skip
    features = FeatureFile.open(tmp_path / "b.h5")
    accepted(features, readers(image=f"hf:{hf['vit32']},torchvision:resnet18", audio="torchvision:resnet18,m:net"))
    refused(features, readers(audio=f"hf:{hf['w2v']}"), "'audio' of avdigits", "features", "a waveform", "folder")
    refused(features, readers(image=f"hf:{hf['bert']}"), "'image' of avdigits", "tokens")


def test_readers_are_the_modalitys_encoder_and_the_students_net():
    models = ModelsParams(student="torchvision:resnet18", encoders={"audio": "hf:x"})
    nets = Readers(models, "image").mapping(["image", "audio", "text"])
    assert [n.text for n in nets["image"]] == ["auto", "torchvision:resnet18"]
    assert [n.text for n in nets["audio"]] == ["hf:x"] and [n.text for n in nets["text"]] == ["auto"]


def test_clips_of_any_rate_are_resampled_to_the_extractors(hf, tmp_path):
    from transformers import Wav2Vec2FeatureExtractor

    root = tmp_path / "f"
    rows = []
    for i in range(12):
        write_wav(root / "s" / f"{i}.wav", i % 3, rate=RATE // 2 if i % 2 else RATE)
        np.save(root / "s" / f"{i}.npy", np.full(3, i, dtype=np.float32))
        rows.append({"audio_file_name": f"s/{i}.wav", "sensor_file_name": f"s/{i}.npy", "label": NAMES[i % 3]})
    write_table(root / "metadata.csv", rows)
    features = prepared(root, tmp_path / "f.h5", "-S", "common.student=audio", "-S", f"models.student=hf:{hf['w2v']}",
                        *encoder("audio", f"hf:{hf['w2v']}"))  # fmt: skip
    assert features.modalities["audio"] == (4000,) and features.transform("audio")["made_for"] == [f"hf:{hf['w2v']}"]
    clips = expected_clips(root, rows, 16000)  # 4 kHz and 8 kHz files, both resampled to 16 kHz
    extractor = Wav2Vec2FeatureExtractor(sampling_rate=16000, do_normalize=True)
    expected = extractor(list(clips), sampling_rate=16000, return_tensors="np")["input_values"]
    assert np.allclose(features.read("audio"), expected, atol=1e-6)


def test_a_folder_file_from_before_forms_reads_as_features(plain, tmp_path):
    """Files prepared before states had ``form`` and ``made_for``: features for auto nets, refused for others."""
    root, _ = plain
    prepared(root, tmp_path / "f.h5")
    with h5py.File(tmp_path / "f.h5", "a") as f:
        for modality in ("image", "audio"):
            del f[f"transforms/{modality}"].attrs["form"], f[f"transforms/{modality}"].attrs["made_for"]
    features = FeatureFile.open(tmp_path / "f.h5")
    accepted(features, readers(image="auto", audio="auto"))
    refused(features, readers(image="torchvision:resnet18"), "stored as features (made for auto)", "need pixels")
    assert get_source("folder").feature_step("image", features.transform("image")).apply.__name__ == "image_features"


def test_predict_batches_keep_the_stored_type_of_the_students_rows(plain, tmp_path):
    """`mst predict` stacks the student's rows in the type its feature file stores (uint8 pixels here), and in
    float32 when no feature file can tell (only .npy rows given)."""
    from types import SimpleNamespace

    from mstcli.data.fingerprint import feature_fingerprint
    from mstcli.stages.predict import FeatureContext

    root, _ = plain
    features = prepared(root, tmp_path / "f.h5", *encoder("image", "torchvision:resnet18"))
    spec = SimpleNamespace(dataset="folder", student="image")
    student = SimpleNamespace(spec=spec, fingerprint=feature_fingerprint(features), path=tmp_path / "student.pt",
                              split_group=0)
    assert FeatureContext(tmp_path / "f.h5", student).row_dtype() == "uint8"
    assert FeatureContext(tmp_path / "missing.h5", student).row_dtype() == "float32"
    spec.student = "audio"
    assert FeatureContext(tmp_path / "f.h5", student).row_dtype() == "float32"
