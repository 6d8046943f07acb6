"""A user's own paired data: a folder of files with a metadata table (``common.dataset: folder``).

The folder is read as mstcli/data/folder/table.py describes (``<modality>_file_name`` / ``<modality>_text``
columns, ``label``, optional ``split``), each modality is featurized by its kind (mstcli/data/folder/kinds.py) in
worker processes, and the rows stream into the same feature file every other data set writes. Only the rows that
decoded in every modality are kept, so the modalities stay paired. Each modality's kind and settings are stored
with it (``/transforms/<modality>``), which is how ``mst predict`` and ``mst export`` featurize a new file.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.folder.decoding import Chunk, decode_in_order
from mstcli.data.folder.kinds import DecodeError, KindSettings, array_row, image_channels_of, read_clip
from mstcli.data.folder.table import FolderTable, Problem, read_table
from mstcli.data.readers import BadInput, RawInput
from mstcli.data.sources import DataSource, FeatureStep, register
from mstcli.data.splits import TEST, TRAIN, UNASSIGNED, VAL, drawn_split_groups
from mstcli.data.store import FeatureWriter
from mstcli.errors import UserError

DATASET = "folder"
BACKBONE_WIDTH = 2048
_SPLIT_CODES = {"": UNASSIGNED, "train": TRAIN, "validation": VAL, "test": TEST}


def bad_rows_path(features: Path) -> Path:
    """Where ``prepare.bad_rows: skip`` lists the rows it left out: beside the feature file."""
    return features.with_name(f"{features.stem}.bad_rows.csv")


def class_names_of(labels: list[str]) -> list[str]:
    """The classes in a stable order: numerically when every label is an integer, else alphabetically."""
    unique = set(labels)
    try:
        return [str(n) for n in sorted({int(v) for v in unique})]
    except ValueError:
        return sorted(unique)


def label_indices(labels: list[str], class_names: list[str]) -> np.ndarray:
    numeric = all(name.lstrip("-").isdigit() for name in class_names)
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[str(int(v)) if numeric else v] for v in labels], dtype=np.int64)


def _message(source: Path, problem: Problem) -> str:
    file = f" ({problem.file})" if problem.file else ""
    return f"{source / problem.place.table} line {problem.place.line}{file}: {problem.reason}"


def _refuse(source: Path, problems: list[Problem], scope: str = "") -> UserError:
    """One line: the first bad row (file, line, what) and how many other rows have problems."""
    others = len(problems) - 1
    more = ""
    if others:
        more = f"; {others} other row{'s' if others != 1 else ''}{scope} {'have' if others != 1 else 'has'} problems"
    return UserError(f"{_message(source, problems[0])}{more} (prepare.bad_rows=skip leaves bad rows out)")


def _kind_settings(table: FolderTable, params: Any) -> KindSettings:
    """The settings every row is featurized with, some read off the first usable row (image channels in auto
    mode, the shape of each .npy modality). A first row that cannot be read is a bad row like any other."""
    channels = {"gray": 1, "rgb": 3}.get(params.image_mode, 0)
    shapes: dict[str, tuple[int, ...]] = {}
    rate = params.sample_rate
    for modality in table.modalities:
        if modality.kind == "audio" and not rate:
            rate = _first_readable(table, modality.name, read_clip)[1]
        if modality.kind == "image" and not channels and params.image_backbone == "none":
            channels = _first_readable(table, modality.name, image_channels_of)
        if modality.kind == "array":
            shapes[modality.name] = tuple(_first_readable(table, modality.name, lambda p: array_row(p, None)).shape)
    return KindSettings(
        image_size=params.image_size,
        image_channels=channels or 1,
        sample_rate=rate or 16000,
        clip_seconds=params.clip_seconds,
        spec_size=params.spec_size,
        array_shapes=shapes,
    )


def _first_readable(table: FolderTable, modality: str, read: Any) -> Any:
    for row in range(min(64, len(table))):
        try:
            return read(table.path(modality, row))
        except DecodeError:
            continue
    raise UserError(f"{table.root}: none of the first 64 files of {modality} can be read")


def _shapes(table: FolderTable, settings: KindSettings, params: Any, text_width: int) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for m in table.modalities:
        if m.kind == "image":
            shapes[m.name] = (
                (BACKBONE_WIDTH,)
                if params.image_backbone == "resnet50"
                else (settings.image_channels, settings.image_size, settings.image_size)
            )
        elif m.kind == "audio":
            shapes[m.name] = (1, settings.spec_size, settings.spec_size)
        elif m.kind == "array":
            shapes[m.name] = settings.array_shapes[m.name]
        else:
            shapes[m.name] = (text_width,)
    return shapes


def _states(
    table: FolderTable, settings: KindSettings, params: Any, text_model: str, text_width: int
) -> dict[str, dict[str, Any]]:
    """What ``mst predict`` needs to featurize a new file of each modality as prepare did."""
    states: dict[str, dict[str, Any]] = {}
    for m in table.modalities:
        state: dict[str, Any] = {"kind": m.kind, "column": m.column}
        if m.kind == "image":
            state.update(
                channels=settings.image_channels, size=settings.image_size, backbone=params.image_backbone,
                weights=str(params.image_weights or ""),
            )
        elif m.kind == "audio":
            state.update(
                sample_rate=settings.sample_rate, clip_seconds=settings.clip_seconds, spec_size=settings.spec_size
            )
        elif m.kind == "text":
            state.update(model=text_model, max_length=params.text_max_length, width=text_width)
        states[m.name] = state
    return states


def _chunks(table: FolderTable, rows: np.ndarray, settings: KindSettings, params: Any) -> Iterator[Chunk]:
    kinds = {m.name: m.kind for m in table.modalities}
    from_files = {m.name: m.from_files for m in table.modalities}
    check_only = tuple(m.name for m in table.modalities if m.kind == "image" and params.image_backbone != "none")
    step = params.chunk_rows
    for start in range(0, len(rows), step):
        part = rows[start : start + step]
        yield Chunk(
            start=start,
            root=str(table.root),
            values={m: [table.values[m][i] for i in part] for m in kinds},
            kinds=kinds,
            from_files=from_files,
            settings=settings,
            check_only=check_only,
        )


def _workers(params: Any, rows: int) -> int:
    if params.workers:
        return params.workers
    return 1 if rows <= params.chunk_rows else max(1, min(os.cpu_count() or 1, 8))


def build(source: Path, params: Any, out: Path, meta: dict[str, Any]) -> None:
    from mstcli.ui import logger, progress_bar

    table = read_table(source)
    problems = list(table.problems)
    if problems and params.bad_rows == "error":
        raise _refuse(source, problems)
    if not len(table):
        raise UserError(f"{source}: no usable rows ({len(problems)} rows have problems)")
    names = class_names_of(table.labels)
    given = np.array([_SPLIT_CODES[s] for s in table.splits], dtype=np.int64)
    drawn_split_groups(label_indices(table.labels, names), given, names, groups=1)  # refuse an unsplittable folder now
    settings = _kind_settings(table, params)

    text_encoder, text_model = None, ""
    if any(m.kind == "text" for m in table.modalities):
        from mstcli.data.encoders import TextEncoder, default_text_model

        folder = Path(params.text_model).expanduser() if params.text_model else default_text_model()
        text_encoder, text_model = TextEncoder(folder, params.text_max_length, tweets=False), str(folder)
    image_encoder = None
    if params.image_backbone == "resnet50" and any(m.kind == "image" for m in table.modalities):
        from mstcli.data.encoders import ImageEncoder

        image_encoder = ImageEncoder(params.image_weights)

    rows = np.arange(len(table))
    kinds = {m.name: m.kind for m in table.modalities}
    shapes = _shapes(table, settings, params, text_encoder.width if text_encoder else 0)
    kept: list[int] = []
    with FeatureWriter(
        out,
        dataset=DATASET,
        modalities=shapes,
        num_samples=len(table),
        class_names=names,
        params=meta,
        transforms=_states(table, settings, params, text_model, text_encoder.width if text_encoder else 0),
        resizable=True,
    ) as writer:
        with progress_bar(f"decoding {source.name}", len(table)) as advance:
            for done in decode_in_order(_chunks(table, rows, settings, params), _workers(params, len(table))):
                bad = [Problem(table.place(r), file, reason) for r, file, reason in done.problems]
                if bad and params.bad_rows == "error":
                    raise _refuse(source, bad + problems, " found so far")
                problems.extend(bad)
                if done.kept:
                    for name, block in done.rows.items():
                        if kinds[name] == "text":
                            block = _encode(text_encoder, block, params.encode_batch)
                        elif kinds[name] == "image" and image_encoder is not None:
                            block = _encode(image_encoder, block, params.encode_batch)
                        writer.write(name, len(kept), block)
                    kept.extend(done.kept)
                advance(len(done.kept) + len(done.problems))
        if not kept:
            raise UserError(f"{source}: no row could be decoded ({len(problems)} rows have problems)")
        writer.shrink(len(kept))
        labels = [table.labels[i] for i in kept]
        names = class_names_of(labels)
        indices = label_indices(labels, names)
        writer.class_names = names
        writer.set_split_groups(*drawn_split_groups(indices, given[kept], names))
        writer.write_labels(indices)

    report = bad_rows_path(out)
    if problems:
        _write_bad_rows(report, problems)
        logger().warning(f"left out {len(problems)} of {len(table) + len(table.problems)} rows; see {report}")
    elif report.exists():
        report.unlink()  # a list from an earlier prepare would describe rows this file no longer lacks


def _encode(encoder: Any, items: list[Any], batch: int) -> np.ndarray:
    return np.concatenate([encoder(items[i : i + batch]) for i in range(0, len(items), batch)])


def _write_bad_rows(path: Path, problems: list[Problem]) -> None:
    from mstcli.atomic_write import write_text

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["metadata", "line", "file", "reason"])
    for p in sorted(problems, key=lambda p: (p.place.table, p.place.line)):
        writer.writerow([p.place.table, p.place.line, p.file, p.reason])
    write_text(path, text.getvalue())


# ---- mst predict / mst export: a new file of a modality, featurized from the stored state ------------------


def _settings_of(state: dict[str, Any]) -> KindSettings:
    return KindSettings(
        image_size=int(state.get("size", 32)),
        image_channels=int(state.get("channels", 1)),
        sample_rate=int(state.get("sample_rate", 16000)),
        clip_seconds=float(state.get("clip_seconds", 1.0)),
        spec_size=int(state.get("spec_size", 32)),
    )


def _no_check(item: RawInput, prepare: dict[str, Any], state: dict[str, Any] | None) -> None:
    if state is None:
        raise BadInput("the feature file holds no record of this modality's feature step; run `mst prepare` again")


def image_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    from mstcli.data.folder.kinds import image_row

    assert state is not None
    if state.get("backbone", "none") != "none":
        from mstcli.data.encoders import ImageEncoder

        return ImageEncoder(state.get("weights") or None)([i.path for i in items])
    settings = _settings_of(state)
    try:
        return np.stack([image_row(i.path, settings) for i in items])
    except DecodeError as exc:
        raise UserError(str(exc)) from None


def audio_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    from mstcli.data.folder.kinds import clip_window, log_mel_rows

    assert state is not None
    settings = _settings_of(state)
    return log_mel_rows(np.stack([clip_window(i.data, i.rate, settings) for i in items]), settings)


def text_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    from mstcli.data.encoders import TextEncoder

    assert state is not None
    encoder = TextEncoder(Path(state["model"]), int(state["max_length"]), tweets=False)
    return encoder([str(i.data) for i in items])


def image_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import feature_rows_graph

    assert state is not None
    if state.get("backbone", "none") != "none":
        return feature_rows_graph(
            (BACKBONE_WIDTH,),
            "run the frozen torchvision ResNet-50 (prepare.image_weights) on the RGB image resized to 224 x 224 with "
            "ImageNet mean and std, without its classifier: 2048 values",
        )
    size, channels = int(state["size"]), int(state["channels"])
    return feature_rows_graph(
        (channels, size, size),
        f"decode the image as {'grayscale' if channels == 1 else 'RGB'}, scale the pixels to [0, 1] (divide by "
        f"255), resize to {size} x {size} (bilinear with antialiasing, the aspect ratio not kept: torch's "
        f"interpolate(mode='bilinear', antialias=True)); the rows are {channels} x {size} x {size}",
    )


def audio_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import log_mel_graph

    assert state is not None
    return log_mel_graph(_settings_of(state))


def text_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import feature_rows_graph

    assert state is not None
    return feature_rows_graph(
        (int(state["width"]),),
        f"encode the text with the transformers model of prepare.text_model ({Path(state['model']).name}), "
        f"at most {state['max_length']} tokens, as the attention-masked mean of the last hidden states (the pooler "
        "output where the model has trained pooler weights): one vector per text",
    )


STEPS = {
    "image": FeatureStep(reads="image", check=_no_check, apply=image_features, graph=image_graph),
    "audio": FeatureStep(reads="audio", check=_no_check, apply=audio_features, graph=audio_graph),
    "text": FeatureStep(reads="text", check=_no_check, apply=text_features, graph=text_graph),
}


def step_for(modality: str, state: dict[str, Any] | None) -> FeatureStep | None:
    """A folder modality's feature step, by the kind prepare stored for it; .npy modalities have none (their files
    are feature rows already)."""
    if state is None:
        return None
    return STEPS.get(str(state.get("kind", "")))


SOURCE = register(
    DataSource(
        name=DATASET,
        modalities=(),
        default_source=None,
        description="your own paired files: a folder with metadata.csv or metadata.jsonl (`mst example-folder`)",
        build=build,
        step_for=step_for,
    )
)
