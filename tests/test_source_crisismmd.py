"""CrisisMMD v2.0 from the humanitarian TSVs and JPEG images (tiny BERT, random ResNet-50), and from the
reference's tensor file; errors named."""

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from source_pipeline import check_eval_files, invoke, prepare_fails, run_all_stages, write_params

from mstcli.data.store import FeatureFile

COLUMNS = [
    "event_name",
    "tweet_id",
    "image_id",
    "tweet_text",
    "image",
    "label",
    "label_text",
    "label_image",
    "label_text_image",
]
WORDS = ["flood", "fire", "help", "road", "people", "damage", "rescue", "car", "@", "user", "httpurl", "look"]
# the humanitarian task's eight labels, as CrisisMMD v2.0 writes them
HUMANITARIAN = [
    "not_humanitarian",
    "affected_individuals",
    "infrastructure_and_utility_damage",
    "injured_or_dead_people",
    "missing_or_found_people",
    "rescue_volunteering_or_donation_effort",
    "vehicle_damage",
    "other_relevant_information",
]


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> tuple[Path, Path]:
    """A tiny BERT folder (vocab, config, weights) and a randomly initialised torchvision resnet50 state_dict."""
    import torchvision
    from transformers import BertConfig, BertModel, BertTokenizer

    root = tmp_path_factory.mktemp("encoders")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]) + "\n")
    folder = root / "tiny-bert"
    BertTokenizer(str(vocab)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=5 + len(WORDS),
        hidden_size=12,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=16,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(folder)
    weights = root / "resnet50.pt"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), weights)
    return folder, weights


def write_crisismmd(root: Path, per_part: int = 6) -> Path:
    """Three TSVs with the real columns, a duplicated tweet_id across train/dev, one JPEG per row; each tweet's
    text names its own two words (WORDS[tweet % 8], WORDS[tweet // 8 % 8])."""
    rng = np.random.default_rng(0)
    (root / "crisismmd_datasplit_all").mkdir(parents=True)
    tweet = 1000
    for part in ("train", "dev", "test"):
        rows = []
        for i in range(per_part):
            tweet += 1
            label = HUMANITARIAN[(tweet + i) % 8]
            image = f"data_image/event/{tweet}_0.jpg"
            (root / image).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(root / image)
            text = f"@bob{i} look {WORDS[tweet % 8]} {WORDS[tweet // 8 % 8]} http://t.co/x{i}"
            rows.append(["event", str(tweet), f"{tweet}_0", text, image, label, label, label, "Positive"])
        if part == "dev":
            rows.append(
                ["event", "1001", "1001_1", "fire", "data_image/event/1002_0.jpg", "vehicle_damage", "", "", ""]
            )
        with open(root / f"crisismmd_datasplit_all/task_humanitarian_text_img_{part}.tsv", "w", newline="") as f:
            writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
            writer.writerows([COLUMNS, *rows])
    return root


def read_tsv_rows(root: Path) -> list[dict]:
    """The fixture's TSV rows, train, dev then test, the first of each tweet_id only (the documented de-duplication)."""
    rows, seen = [], set()
    for part in ("train", "dev", "test"):
        with open(root / f"crisismmd_datasplit_all/task_humanitarian_text_img_{part}.tsv", newline="") as f:
            for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\"):
                if row["tweet_id"] not in seen:
                    seen.add(row["tweet_id"])
                    rows.append(row)
    return rows


def test_crisismmd_tsvs_are_deduplicated_encoded_and_run(tmp_path, monkeypatch, encoders):
    import torchvision
    from transformers import BertModel, BertTokenizer

    text_model, weights = encoders
    source = write_crisismmd(tmp_path / "CrisisMMD_v2.0")
    monkeypatch.chdir(tmp_path)
    write_params(
        tmp_path, "crisismmd", source, {"text_model": str(text_model), "image_weights": str(weights), "encode_batch": 7}
    )
    invoke("prepare")
    path = tmp_path / "data/features/crisismmd.h5"
    features = FeatureFile.open(path)
    rows = read_tsv_rows(source)
    assert len(rows) == features.num_samples == 18  # the duplicate tweet 1001 in dev is dropped
    assert [r["tweet_id"] for r in rows] == [str(1001 + k) for k in range(18)]
    assert features.modalities == {"image": (2048,), "text": (12,)}
    assert sorted(features.class_names) == sorted(HUMANITARIAN)
    assert [features.class_names[y] for y in features.labels()] == [r["label"] for r in rows]

    # text: every row is the BERT pooler output of its own tweet, mentions and links normalized as BERTweet does
    tokenizer, bert = BertTokenizer.from_pretrained(text_model), BertModel.from_pretrained(text_model).eval()
    texts = [f"@USER look {WORDS[t % 8]} {WORDS[t // 8 % 8]} HTTPURL" for t in range(1001, 1019)]
    assert (
        rows[1]["tweet_text"] == "@bob1 look help damage http://t.co/x1"
        and texts[1] == "@USER look help damage HTTPURL"
    )
    with torch.no_grad():
        expected_text = torch.cat([bert(**tokenizer([t], return_tensors="pt")).pooler_output for t in texts])
    np.testing.assert_allclose(features.read("text"), expected_text.numpy(), atol=1e-5)

    # image: the last row of the first encoder batch (also the first of dev), the first of the second, the last row
    net = torchvision.models.resnet50(weights=None)
    net.load_state_dict(torch.load(weights))
    net.fc = torch.nn.Identity()
    transform = torchvision.transforms.Compose(
        [
            torchvision.transforms.Resize((224, 224)),
            torchvision.transforms.ToTensor(),
            torchvision.transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    picked = [6, 7, 17]
    batch = torch.stack([transform(Image.open(source / rows[k]["image"]).convert("RGB")) for k in picked])
    assert [rows[k]["image"] for k in picked] == [f"data_image/event/{1001 + k}_0.jpg" for k in picked]
    with torch.no_grad():
        expected_image = net.eval()(batch)
    np.testing.assert_allclose(features.read("image", np.array(picked)), expected_image.numpy(), rtol=1e-3, atol=2e-3)

    run_all_stages(tmp_path, "text")
    metrics = check_eval_files(tmp_path, "text", path, "text")
    assert metrics["n_test"] == 18 - int(0.8 * 18)


def test_crisismmd_tensor_file(tmp_path, monkeypatch):
    image, text, labels = torch.rand(20, 2048), torch.rand(20, 768), torch.arange(20) % 8
    torch.save((image, text, labels), tmp_path / "CMMD_data.pth")
    monkeypatch.chdir(tmp_path)
    invoke("prepare", "--dataset", "crisismmd", "--source", str(tmp_path))
    features = FeatureFile.open(tmp_path / "data/features/crisismmd.h5")
    np.testing.assert_array_equal(features.read("text"), text.numpy())
    assert features.labels().tolist() == labels.tolist()

    torch.save((image, text[:19], labels), tmp_path / "CMMD_data.pth")
    assert "differ in N (20, 19, 20)" in prepare_fails("--dataset", "crisismmd", "--source", str(tmp_path))


def test_crisismmd_errors_name_the_culprit(tmp_path, encoders):
    text_model, weights = encoders
    source = write_crisismmd(tmp_path / "a", per_part=2)
    args = ["--dataset", "crisismmd", "--source", str(source), "-S", f"prepare.text_model={text_model}"]
    assert "prepare.image_weights" in prepare_fails(*args)
    args += ["-S", f"prepare.image_weights={weights}"]

    image = source / "data_image/event/1002_0.jpg"
    image.rename(image.with_suffix(".bak"))
    assert "1002_0.jpg: missing (image of task_humanitarian_text_img_train.tsv line 3)" in prepare_fails(*args)
    image.with_suffix(".bak").rename(image)
    assert "no_such_folder/config.json: missing" in prepare_fails(*args, "-S", "prepare.text_model=no_such_folder")

    dev = source / "crisismmd_datasplit_all/task_humanitarian_text_img_dev.tsv"
    original = dev.read_text()
    dev.write_text(original.replace("\tlabel\t", "\tlabels\t"))
    assert "task_humanitarian_text_img_dev.tsv: missing column label" in prepare_fails(*args)
    lines = [line.split("\t") for line in original.splitlines()]
    lines[2][5] = "flooding"
    dev.write_text("\n".join("\t".join(fields) for fields in lines) + "\n")
    assert "task_humanitarian_text_img_dev.tsv: line 3: unknown humanitarian class 'flooding'" in prepare_fails(*args)
    dev.write_text(original)
    (source / "crisismmd_datasplit_all/task_humanitarian_text_img_test.tsv").unlink()
    assert "task_humanitarian_text_img_test.tsv: missing" in prepare_fails(*args)
