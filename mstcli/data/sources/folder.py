"""A user's own paired data: a folder of files with a metadata table (``common.dataset: folder``).

The folder is read as mstcli/data/folder/table.py describes (``<modality>_file_name`` / ``<modality>_text``
columns, ``label``, optional ``split``), each modality is featurized by its kind (mstcli/data/folder/kinds.py) in
worker processes, and the rows stream into the same feature file every other data set writes. Only the rows that
decoded in every modality are kept, so the modalities stay paired. Each modality's kind and settings are stored
with it (``/transforms/<modality>``), which is how ``mst predict`` and ``mst export`` featurize a new file.
What a modality's rows are follows the nets that read it (mstcli/data/folder/net_inputs.py): feature rows for
mst's own nets, raw pixels, tokens or a feature extractor's output for torchvision and Hugging Face nets.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.data.folder.decoding import Chunk, decode_in_order
from mstcli.data.folder.kinds import DecodeError, KindSettings, array_row, image_channels_of
from mstcli.data.folder.net_inputs import AudioStep, InputPlan, Readers, TokenStep, plan_inputs
from mstcli.data.folder.table import FolderTable, Problem, read_table
from mstcli.data.readers import BadInput, RawInput
from mstcli.data.row_scaling import GROUP_KEY, group_statistics, row_scaling, scaling_state
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


def plain_integer(label: str) -> bool:
    """Whether ``label`` is an integer as Python writes it ("7", "-3"; not "07" nor "+7")."""
    try:
        return str(int(label)) == label
    except ValueError:
        return False


def class_names_of(labels: list[str]) -> list[str]:
    """The classes in a stable order: numerically when every label is a plain integer, else alphabetically. Labels
    are kept as written, so "01" and "1" are two classes."""
    unique = set(labels)
    if all(plain_integer(v) for v in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def label_indices(labels: list[str], class_names: list[str]) -> np.ndarray:
    index = {name: i for i, name in enumerate(class_names)}
    return np.array([index[v] for v in labels], dtype=np.int64)


def _message(source: Path, problem: Problem) -> str:
    file = f" ({problem.file})" if problem.file else ""
    return f"{source / problem.place.table} {problem.place.position}{file}: {problem.reason}"


def _refuse(source: Path, problems: list[Problem], scope: str = "") -> UserError:
    """One line: the first bad row (file, line, what) and how many other rows have problems."""
    others = len(problems) - 1
    more = ""
    if others:
        more = f"; {others} other row{'s' if others != 1 else ''}{scope} {'have' if others != 1 else 'has'} problems"
    return UserError(f"{_message(source, problems[0])}{more} (prepare.bad_rows=skip leaves bad rows out)")


#: images whose mode decides prepare.image_mode auto, spread evenly over the table (headers only: cheap)
MODE_SAMPLE = 256


def _kind_settings(table: FolderTable, params: Any) -> KindSettings:
    """The settings every row is featurized with, some read off the folder's files: image channels in auto mode
    (RGB when any image of an even sample of the table is in colour, so one grayscale scan cannot turn a folder
    of photos gray), the rate of the first readable clip (from its header), the shape of each .npy modality
    (its first readable row). A file that cannot be read is a bad row like any other."""
    channels = {"gray": 1, "rgb": 3}.get(params.image_mode, 0)
    shapes: dict[str, tuple[int, ...]] = {}
    rate = params.sample_rate
    for modality in table.modalities:
        if modality.kind == "audio" and not rate:
            rate = _first_readable(table, modality.name, lambda p: _clip_info(p).rate)
        if modality.kind == "image" and params.image_mode == "auto" and params.image_backbone == "none":
            channels = max(channels, _sampled_channels(table, modality.name))  # one setting for every image modality
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


def _clip_info(path: Path) -> Any:
    from mstcli.data.clips import ClipError, clip_info

    try:
        return clip_info(path)
    except ClipError as exc:
        raise DecodeError(str(exc)) from None


def _first_readable(table: FolderTable, modality: str, read: Any) -> Any:
    for row in range(min(64, len(table))):
        try:
            return read(table.path(modality, row))
        except DecodeError:
            continue
    raise UserError(f"{table.root}: none of the first 64 files of {modality} can be read")


def _sampled_channels(table: FolderTable, modality: str) -> int:
    """3 when any image of an even sample of ``MODE_SAMPLE`` rows is in colour, else 1."""
    rows = np.unique(np.linspace(0, len(table) - 1, min(MODE_SAMPLE, len(table))).round().astype(np.int64))
    read = 0
    for row in rows:
        try:
            channels = image_channels_of(table.path(modality, int(row)))
        except DecodeError:
            continue
        if channels == 3:
            return 3
        read += 1
    if not read:
        raise UserError(f"{table.root}: none of {len(rows)} sampled files of {modality} can be read")
    return 1


def _shapes(
    table: FolderTable, settings: KindSettings, params: Any, text_width: int, plans: dict[str, InputPlan]
) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for m in table.modalities:
        if plans[m.name].form != "features":
            shapes[m.name] = plans[m.name].shape
        elif m.kind == "image":
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
    table: FolderTable,
    settings: KindSettings,
    params: Any,
    text_model: str,
    text_width: int,
    plans: dict[str, InputPlan],
) -> dict[str, dict[str, Any]]:
    """What ``mst predict`` needs to featurize a new file of each modality as prepare did, and which nets its rows
    were made for (net_inputs.InputPlan.state: ``form``, ``made_for`` and the form's own numbers)."""
    states: dict[str, dict[str, Any]] = {}
    for m in table.modalities:
        state: dict[str, Any] = {"kind": m.kind, "column": m.column}
        if plans[m.name].form != "features":
            pass
        elif m.kind == "image":
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
        states[m.name] = {**state, **plans[m.name].state()}
    return states


def _own_settings(settings: KindSettings, plans: dict[str, InputPlan]) -> dict[str, KindSettings]:
    """Settings of the modalities whose form has its own numbers: the pixel size a Hugging Face processor asks
    for, the sample rate of a feature extractor."""
    own = {}
    for name, plan in plans.items():
        if plan.form == "pixels":
            own[name] = dataclasses.replace(settings, image_size=plan.size)
        elif plan.sample_rate:
            own[name] = dataclasses.replace(settings, sample_rate=plan.sample_rate, clip_seconds=plan.clip_seconds)
    return own


def chunk_size(
    table: FolderTable, settings: KindSettings, params: Any, plans: dict[str, InputPlan], shapes: dict[str, Any]
) -> int:
    """Rows per decoding chunk: as many as fit ``prepare.chunk_mb`` (at most ``prepare.chunk_rows``), by the bytes
    a worker returns per row (the stored row of each modality, and a clip's window, which the worker holds beside
    its spectrogram), so that 2 x workers chunks in flight stay under 2 x workers x chunk_mb at any image size."""
    own = _own_settings(settings, plans)
    row_bytes = 0
    for m in table.modalities:
        row_bytes += int(np.prod(shapes[m.name])) * np.dtype(plans[m.name].dtype).itemsize
        if m.kind == "audio":
            row_bytes += own.get(m.name, settings).window * 4
    return max(1, min(params.chunk_rows, int(params.chunk_mb * 2**20) // max(1, row_bytes)))


def _chunks(
    table: FolderTable, rows: np.ndarray, settings: KindSettings, params: Any, plans: dict[str, InputPlan], step: int
) -> Iterator[Chunk]:
    kinds = {m.name: m.kind for m in table.modalities}
    forms = {name: plan.form for name, plan in plans.items() if plan.form != "features"}
    own_settings = _own_settings(settings, plans)
    from_files = {m.name: m.from_files for m in table.modalities}
    check_only = tuple(
        m.name
        for m in table.modalities
        if m.kind == "image" and params.image_backbone != "none" and plans[m.name].form == "features"
    )
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
            forms=forms,
            own_settings=own_settings,
        )


def _workers(params: Any, rows: int, step: int) -> int:
    if params.workers:
        return params.workers
    return 1 if rows <= step else max(1, min(os.cpu_count() or 1, 8))


def build(source: Path, params: Any, out: Path, meta: dict[str, Any], readers: Readers | None = None) -> None:
    """Write the feature file of the folder ``source``; ``readers`` (the run's nets by modality, default mst's own)
    decide each modality's form (net_inputs.plan_inputs)."""
    from mstcli.ui import logger, progress_bar

    table = read_table(source, params.modalities)
    if table.ignored:
        logger().info(f"ignoring the columns {', '.join(table.ignored)} (not in prepare.modalities)")
    problems = list(table.problems)
    if problems and params.bad_rows == "error":
        raise _refuse(source, problems)
    if not len(table):
        raise UserError(f"{source}: no usable rows ({len(problems)} rows have problems)")
    names = class_names_of(table.labels)
    given = np.array([_SPLIT_CODES[s] for s in table.splits], dtype=np.int64)
    drawn_split_groups(label_indices(table.labels, names), given, names, groups=1)  # refuse an unsplittable folder now
    readers = readers or Readers()
    plans = {m.name: plan_inputs(m.name, m.kind, readers(m.name), params) for m in table.modalities}
    settings = _kind_settings(table, params)

    text_encoder, text_model = None, ""
    if any(m.kind == "text" and plans[m.name].form == "features" for m in table.modalities):
        from mstcli.data.encoders import TextEncoder, default_text_model

        folder = Path(params.text_model).expanduser() if params.text_model else default_text_model()
        text_encoder, text_model = TextEncoder(folder, params.text_max_length, tweets=False), str(folder)
    text_width = text_encoder.width if text_encoder else 0
    states = _states(table, settings, params, text_model, text_width, plans)
    steps = _parent_steps(table, params, plans, states, text_encoder)

    rows = np.arange(len(table))
    kept: list[int] = []
    shapes = _shapes(table, settings, params, text_width, plans)
    step = chunk_size(table, settings, params, plans, shapes)
    with FeatureWriter(
        out,
        dataset=DATASET,
        modalities=shapes,
        num_samples=len(table),
        class_names=names,
        params=meta,
        transforms=states,
        resizable=True,
        dtypes={name: plan.dtype for name, plan in plans.items()},
    ) as writer:
        with progress_bar(f"decoding {source.name}", len(table)) as advance:
            chunks = _chunks(table, rows, settings, params, plans, step)
            for done in decode_in_order(chunks, _workers(params, len(table), step)):
                bad = [Problem(table.place(r), file, reason) for r, file, reason in done.problems]
                if bad and params.bad_rows == "error":
                    raise _refuse(source, bad + problems, " found so far")
                problems.extend(bad)
                if done.kept:
                    for name, block in done.rows.items():
                        if name in steps:
                            block = _encode(steps[name], block, params.encode_batch)
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
        permutations, bounds = drawn_split_groups(indices, given[kept], names)
        writer.set_split_groups(permutations, bounds)
        writer.write_labels(indices)
        for m in table.modalities:
            if m.kind == "array" and params.array_scaling == "standard":
                mean, std = group_statistics(writer.written_blocks(m.name), permutations, bounds)
                writer.transforms[m.name].update(scaling_state(mean, std))

    report = bad_rows_path(out)
    if problems:
        _write_bad_rows(report, problems)
        logger().warning(f"left out {len(problems)} of {len(table) + len(table.problems)} rows; see {report}")
    elif report.exists():
        report.unlink()  # a list from an earlier prepare would describe rows this file no longer lacks


def _parent_steps(
    table: FolderTable,
    params: Any,
    plans: dict[str, InputPlan],
    states: dict[str, dict[str, Any]],
    text_encoder: Any,
) -> dict[str, Callable[[Any], np.ndarray]]:
    """The steps that run in this process on what the workers decoded (models are loaded once, not per worker):
    the frozen text encoder or image backbone, a tokenizer, a feature extractor. Built from the stored states,
    as ``mst predict`` builds them, so a new file gets the very same step."""
    steps: dict[str, Callable[[Any], np.ndarray]] = {}
    image_encoder = None
    for m in table.modalities:
        form = plans[m.name].form
        if m.kind == "text" and form == "features":
            steps[m.name] = text_encoder
        elif form == "tokens":
            steps[m.name] = TokenStep.from_state(states[m.name])
        elif form in ("waveform", "extractor"):
            steps[m.name] = AudioStep.from_state(states[m.name])
        elif m.kind == "image" and form == "features" and params.image_backbone == "resnet50":
            from mstcli.data.encoders import ImageEncoder

            image_encoder = image_encoder or ImageEncoder(params.image_weights)
            steps[m.name] = image_encoder
    return steps


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
        raise BadInput(str(exc)) from None


def audio_features(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """kinds.window_row (the window alone decoded, as prepare's workers did), then the log-mel of prepare."""
    from mstcli.data.folder.kinds import log_mel_rows, window_row

    assert state is not None
    settings = _settings_of(state)
    try:
        return log_mel_rows(np.stack([window_row(i.path, settings) for i in items]), settings)
    except DecodeError as exc:
        raise BadInput(str(exc)) from None


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


def pixel_inputs(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """N x 3 x S x S uint8: kinds.pixel_row, the function the prepare workers ran on the folder's images."""
    from mstcli.data.folder.kinds import pixel_row

    assert state is not None
    try:
        return np.stack([pixel_row(i.path, int(state["size"])) for i in items])
    except DecodeError as exc:
        raise BadInput(str(exc)) from None


def token_inputs(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """N x 2 x L int64 from the tokenizer prepare used (net_inputs.TokenStep, as in build's parent steps)."""
    assert state is not None
    return TokenStep.from_state(state)([str(i.data) for i in items])


def clip_inputs(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """The rows of a Hugging Face audio net: kinds.window_row at the extractor's rate (the function the prepare
    workers ran), then net_inputs.AudioStep (the parent's step at prepare)."""
    from mstcli.data.folder.kinds import window_row

    assert state is not None
    step = AudioStep.from_state(state)
    settings = KindSettings(sample_rate=step.rate, clip_seconds=float(state["clip_seconds"]))
    try:
        windows = np.stack([window_row(i.path, settings) for i in items])
    except DecodeError as exc:
        raise BadInput(str(exc)) from None
    return step(windows)


def pixel_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import feature_rows_graph, pixel_examples

    assert state is not None
    size = int(state["size"])
    return feature_rows_graph(
        (3, size, size),
        f"decode the image as RGB (grayscale repeated), scale the pixels to [0, 1] (divide by 255), resize to {size} "
        f"x {size} (bilinear with antialiasing, the aspect ratio not kept: torch's interpolate(mode='bilinear', "
        f"antialias=True)), clamp to [0, 1], multiply by 255 and round to uint8; the rows are 3 x {size} x {size} "
        "uint8, not normalized (the student normalizes them)",
        dtype="uint8",
        examples=pixel_examples((3, size, size)),
        parameters={"form": "pixels", "size": size, "processor": state.get("processor", "")},
    )


def token_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import feature_rows_graph, token_examples

    assert state is not None
    length, vocab = int(state["max_length"]), int(state["vocab_size"])
    return feature_rows_graph(
        (2, length),
        f"tokenize the text with the Hugging Face tokenizer of {Path(str(state['tokenizer'])).name} "
        f"(AutoTokenizer, padding='max_length', truncation=True, max_length={length}); row 0 holds the input_ids, "
        "row 1 the attention_mask, as int64",
        dtype="int64",
        examples=token_examples(length, vocab),
        parameters={"form": "tokens", "tokenizer": state["tokenizer"], "max_length": length, "vocab_size": vocab},
    )


def clip_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    from mstcli.data.graphs import feature_rows_graph

    assert state is not None
    rate, seconds, key = int(state["sample_rate"]), float(state["clip_seconds"]), str(state["key"])
    window = int(round(seconds * rate))
    extractor = str(state.get("extractor", ""))
    step = (
        f"pass it through the Hugging Face feature extractor of {Path(extractor).name} (AutoFeatureExtractor, "
        f"sampling_rate={rate}) and keep its {key}"
        if extractor
        else "keep the window as it is"
    )
    return feature_rows_graph(
        tuple(int(n) for n in state["shape"]),
        f"decode the clip to mono float samples (mean of the channels), resample it to {rate} Hz, centre it in a "
        f"window of {window} samples (a shorter clip zero-padded with (window - n) // 2 zeros before it, a longer "
        f"one keeps samples (n - window) // 2 onwards); {step}; float32",
        parameters={"form": state["form"], "sample_rate": rate, "window": window, "key": key, "extractor": extractor},
    )


#: the feature steps of a folder modality, by its kind and the form prepare stored it in (net_inputs.py)
STEPS = {
    ("image", "features"): FeatureStep(reads="image", check=_no_check, apply=image_features, graph=image_graph),
    ("audio", "features"): FeatureStep(reads="audio", check=_no_check, apply=audio_features, graph=audio_graph),
    ("text", "features"): FeatureStep(reads="text", check=_no_check, apply=text_features, graph=text_graph),
    ("image", "pixels"): FeatureStep(reads="image", check=_no_check, apply=pixel_inputs, graph=pixel_graph),
    ("text", "tokens"): FeatureStep(reads="text", check=_no_check, apply=token_inputs, graph=token_graph),
    ("audio", "waveform"): FeatureStep(reads="audio", check=_no_check, apply=clip_inputs, graph=clip_graph),
    ("audio", "extractor"): FeatureStep(reads="audio", check=_no_check, apply=clip_inputs, graph=clip_graph),
}


def _array_scaling(state: dict[str, Any]) -> Any:
    scaling = row_scaling(state, int(state.get(GROUP_KEY, 0)))
    assert scaling is not None
    return scaling


def standardized_arrays(items: list[RawInput], prepare: dict[str, Any], state: dict[str, Any] | None) -> np.ndarray:
    """.npy rows standardized by the training statistics of the student's split group, as the stages read them
    (array_scaling.py)."""
    assert state is not None
    return _array_scaling(state)(np.stack([np.asarray(i.data, dtype=np.float32) for i in items]))


def standardized_graph(prepare: dict[str, Any], state: dict[str, Any] | None) -> Any:
    """``mst export``'s graph for a standardized array student: the .npy rows as given, standardized inside."""
    from mstcli.data.graphs import FeatureGraph, GraphInput, Standardize

    assert state is not None
    scaling = _array_scaling(state)
    shape = tuple(scaling.mean.shape)
    return FeatureGraph(
        module=Standardize(scaling.mean, scaling.std),
        inputs=(GraphInput("array", shape, "float32", "the .npy array as the folder gives it"),),
        outside="load the .npy array as float32 (np.load); it must have the shape below",
        inside="standardization by the mean and standard deviation of each value over the training rows "
        "(prepare.array_scaling: standard, the student's split group), the student, softmax",
        parameters={"array_scaling": "standard"},
        examples=lambda n, rng: ((scaling.mean + scaling.std * rng.standard_normal((n, *shape))).astype(np.float32),),
    )


#: an array modality standardized by prepare.array_scaling: its .npy rows go through the scaling
STANDARDIZED = FeatureStep(reads="features", check=_no_check, apply=standardized_arrays, graph=standardized_graph)


def step_for(modality: str, state: dict[str, Any] | None) -> FeatureStep | None:
    """A folder modality's feature step, by the kind and the form prepare stored for it (files without a form are
    features); a .npy modality has one only when prepare standardized it (its files are feature rows otherwise)."""
    if state is None:
        return None
    if state.get("kind") == "array":
        return STANDARDIZED if row_scaling(state, 0) is not None else None
    return STEPS.get((str(state.get("kind", "")), str(state.get("form", "features"))))


SOURCE = register(
    DataSource(
        name=DATASET,
        modalities=(),
        default_source=None,
        description="your own paired files: a folder with metadata.csv, metadata.jsonl or metadata.parquet"
        " (`mst example-folder`)",
        build=build,
        step_for=step_for,
        takes_readers=True,
    )
)
