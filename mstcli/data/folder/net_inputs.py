"""What a folder modality's rows are, decided by the nets that read it.

mst's own nets (``auto``) and the user's factories read the feature rows of data/folder/kinds.py. A torchvision or
Hugging Face net brings its own input step instead (its normalization, its tokenizer, its feature extractor), so
it is given the raw input that step starts from, and nothing mst-made in between:

============  ==========  ========  =============================================================================
form          dtype       shape     when
============  ==========  ========  =============================================================================
features      float32     as today  every reader auto or factory; audio read by torchvision (the net repeats the
                                    log-mel channel); .npy arrays whatever reads them
pixels        uint8       3 x S x S an image read by a torchvision or Hugging Face net: RGB, resized as today, not
                                    normalized (the net does it); S from the Hugging Face image processor (or the
                                    model config's image_size), else prepare.image_size
tokens        int64       2 x L     a text read by a Hugging Face net: row 0 the input ids, row 1 the attention
                                    mask, padded or cut to L = prepare.text_max_length by the folder's tokenizer
waveform      float32     T         a clip read by a Hugging Face net whose feature extractor gives one value per
                                    sample (wav2vec2's input_values), or the raw window when it has no extractor
extractor     float32     e.g. F x  a clip read by a Hugging Face net whose extractor gives a 2-D map per clip
                          B         (Whisper's input_features 80 x 3000, AST's input_values 1024 x 128)
============  ==========  ========  =============================================================================

The readers of modality m are ``models.encoders.m`` (its teachers) and, when m is ``common.student``,
``models.student``. Readers that need different inputs of one modality cannot share its rows: a one-line error
says so at prepare. Every decision is stored in the modality's transforms state (``form``, ``made_for`` and what
predict and export need), and :func:`check_inputs` compares it with the nets of a run before training.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mstcli.config import ModelsParams, NetChoice
from mstcli.errors import UserError

FORM_DTYPES = {
    "features": "float32",
    "pixels": "uint8",
    "tokens": "int64",
    "waveform": "float32",
    "extractor": "float32",
}
AUDIO_FORMS = ("waveform", "extractor")
DEFAULT_RATE = 16000  # a Hugging Face audio model without an extractor nor a sampling_rate in its config
#: the files a saved tokenizer leaves in its folder (any one will do; the model config alone is not a tokenizer)
TOKENIZER_FILES = (
    "tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "tokenizer.model", "spiece.model",
    "sentencepiece.bpe.model",
)  # fmt: skip
#: what a Hugging Face model's main input says about the data it reads (builtin data sets: float features only)
_MAIN_INPUT_KINDS = {"pixel_values": "image", "input_ids": "text", "input_values": "audio", "input_features": "audio"}


# ---- who reads a modality ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Readers:
    """The nets of a run by the modality they read: ``models.encoders.<m>`` (the teachers' encoder of m) and
    ``models.student`` for the student's modality. The default reads every modality with mst's own nets."""

    models: ModelsParams = field(default_factory=ModelsParams)
    student: str = ""

    @classmethod
    def of(cls, params: Any) -> Readers:
        """The readers of a run's settings (config.Params)."""
        return cls(params.models, params.common.student)

    def __call__(self, modality: str) -> list[NetChoice]:
        nets = [self.models.choice(modality)]
        if modality == self.student:
            nets.append(self.models.choice("student"))
        return nets

    def mapping(self, modalities: Iterable[str]) -> dict[str, list[NetChoice]]:
        """``modality -> its readers`` for :func:`check_inputs`."""
        return {m: self(m) for m in modalities}


def made_for(nets: list[NetChoice]) -> list[str]:
    """The nets a modality's rows were made for, as stored: sorted, each once."""
    return sorted({n.text for n in nets})


def hf_folder(net: NetChoice) -> Path:
    return Path(net.target).expanduser()


def _same_folder(a: str | Path, b: str | Path) -> bool:
    """Whether two spellings name one folder (``./bert`` and ``bert``), so equal nets never disagree."""
    if not str(a) or not str(b):
        return str(a) == str(b)
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _hf_folders(nets: list[NetChoice]) -> list[str]:
    """The distinct Hugging Face folders among ``nets`` (as first written), in sorted order."""
    folders: list[str] = []
    for net in sorted(nets, key=lambda n: n.target):
        if net.kind == "hf" and not any(_same_folder(net.target, f) for f in folders):
            folders.append(net.target)
    return folders


# ---- the form a modality needs (no file read) ---------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """The form a modality's readers need, decided from their kinds alone: ``features``, ``pixels``, ``tokens``
    or ``audio`` (waveform or extractor: which, the extractor tells), and the Hugging Face folders involved."""

    form: str
    hf: tuple[str, ...] = ()


def needed_form(modality: str, kind: str, nets: list[NetChoice]) -> Need:
    """What rows the readers of a folder modality of ``kind`` take; a one-line UserError when they cannot share
    them (an hf text or audio net beside another kind of net, two tokenizers, a torchvision net on text)."""
    hf = _hf_folders(nets)
    vision = any(n.kind == "torchvision" for n in nets)
    others = [n.text for n in nets if n.kind != "hf"]
    if kind == "image":
        return Need("pixels", tuple(hf)) if hf or vision else Need("features")
    if kind == "text":
        if hf and (others or len(hf) > 1):
            raise _disagree(modality, kind, nets, "token ids of one Hugging Face tokenizer")
        if vision:
            raise UserError(
                f"modality '{modality}' is text: a torchvision net cannot read it ({', '.join(made_for(nets))}); "
                "use auto, hf:<folder> or <module>:<factory>"
            )
        return Need("tokens", tuple(hf)) if hf else Need("features")
    if kind == "audio" and hf:
        if others or len(hf) > 1:
            raise _disagree(modality, kind, nets, "the clip through one Hugging Face feature extractor")
        return Need("audio", tuple(hf))
    return Need("features")


def _disagree(modality: str, kind: str, nets: list[NetChoice], what: str) -> UserError:
    return UserError(
        f"the nets reading {kind} modality '{modality}' ({', '.join(made_for(nets))}) must agree on their inputs: "
        f"a Hugging Face net reads {what}, so give every net of '{modality}' the same hf:<folder> "
        "(models.student and models.encoders)"
    )


# ---- the full plan, at prepare (reads the Hugging Face folders) --------------------------------------------------


@dataclass(frozen=True)
class InputPlan:
    """How one folder modality is stored: its form, what it was made for, and the numbers its step needs."""

    form: str
    made_for: tuple[str, ...]
    size: int = 0  # pixels: S
    processor: str = ""  # pixels: the Hugging Face folder whose processor (or config) gave S; "" prepare.image_size
    tokenizer: str = ""  # tokens: the Hugging Face folder of the tokenizer
    max_length: int = 0  # tokens: L
    vocab_size: int = 0  # tokens: ids are below it (export's example inputs)
    model: str = ""  # waveform / extractor: the Hugging Face folder of the audio net
    extractor: str = ""  # waveform / extractor: the folder of its feature extractor ("" none: the raw window)
    sample_rate: int = 0  # waveform / extractor: the clip's rate
    clip_seconds: float = 0.0
    key: str = ""  # waveform / extractor: the extractor output stored (input_values, input_features)
    shape: tuple[int, ...] = ()  # one row's shape (0-length: the features' own shape, known to the caller)

    @property
    def dtype(self) -> str:
        return FORM_DTYPES[self.form]

    def state(self) -> dict[str, Any]:
        """The keys this plan adds to the modality's transforms state (FeatureWriter's /transforms/<m>)."""
        state: dict[str, Any] = {"form": self.form, "made_for": list(self.made_for)}
        if self.form == "pixels":
            state.update(size=self.size, channels=3, processor=self.processor)
        elif self.form == "tokens":
            state.update(tokenizer=self.tokenizer, max_length=self.max_length, vocab_size=self.vocab_size)
        elif self.form in AUDIO_FORMS:
            state.update(
                model=self.model, extractor=self.extractor, sample_rate=self.sample_rate,
                clip_seconds=self.clip_seconds, key=self.key, shape=list(self.shape),
            )  # fmt: skip
        return state


def plan_inputs(modality: str, kind: str, nets: list[NetChoice], prepare: Any) -> InputPlan:
    """The stored form of a folder modality of ``kind`` read by ``nets``, with the settings (``prepare``:
    config.PrepareParams) and the Hugging Face files it follows; one-line UserErrors for nets that disagree or
    folders that lack what their input step needs."""
    need = needed_form(modality, kind, nets)
    made = tuple(made_for(nets))
    if need.form == "pixels":
        if prepare.image_backbone != "none":
            raise UserError(
                f"modality '{modality}': prepare.image_backbone={prepare.image_backbone} stores 2048-d vectors, but "
                f"{', '.join(made)} read images; set prepare.image_backbone=none"
            )
        size, processor = _pixel_size(modality, need.hf, prepare.image_size)
        return InputPlan("pixels", made, size=size, processor=processor, shape=(3, size, size))
    if need.form == "tokens":
        step = TokenStep(need.hf[0], prepare.text_max_length)
        return InputPlan(
            "tokens", made, tokenizer=need.hf[0], max_length=prepare.text_max_length,
            vocab_size=step.vocab_size, shape=(2, prepare.text_max_length),
        )  # fmt: skip
    if need.form == "audio":
        step = AudioStep.for_model(need.hf[0])
        shape = step.row_shape(prepare.clip_seconds)
        return InputPlan(
            "waveform" if len(shape) == 1 else "extractor", made, model=need.hf[0], extractor=step.folder,
            sample_rate=step.rate, clip_seconds=prepare.clip_seconds, key=step.key, shape=shape,
        )  # fmt: skip
    return InputPlan("features", made)


def _pixel_size(modality: str, folders: tuple[str, ...], default: int) -> tuple[int, str]:
    """S and the folder it came from: the Hugging Face readers' size (all must agree), else ``default``."""
    if not folders:
        return default, ""
    sizes = {folder: hf_image_size(Path(folder).expanduser()) for folder in folders}
    if len(set(sizes.values())) > 1:
        shown = ", ".join(f"hf:{f} {s} x {s}" for f, s in sizes.items())
        raise UserError(f"the Hugging Face nets reading image modality '{modality}' want different sizes ({shown})")
    return next(iter(sizes.values())), folders[0]


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def _config(folder: Path) -> Any:
    """The model config of a Hugging Face folder, or a one-line UserError naming the folder."""
    from transformers import AutoConfig

    _quiet_transformers()
    if not folder.is_dir():
        raise UserError(f"hf:{folder}: not a folder (a Hugging Face net is named by its local folder)")
    try:
        return AutoConfig.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(f"hf:{folder}: not a transformers model folder ({_first_line(exc)})") from None


def _edge(size: Any) -> int | None:
    """The square side a processor's ``size``/``crop_size`` (a dict or a SizeDict) asks for, or None."""
    if size is None:
        return None
    if isinstance(size, int):
        return size
    get = size.get if isinstance(size, dict) else lambda key: getattr(size, key, None)
    height, width, shortest = get("height"), get("width"), get("shortest_edge")
    if height and width:
        if height != width:
            raise UserError(f"an image processor of {height} x {width} pixels: mst stores square images")
        return int(height)
    return int(shortest) if shortest else None


def hf_image_size(folder: Path) -> int:
    """The side S of the images a Hugging Face image model takes: its image processor's crop size or size
    (height/width or shortest edge), else its config's image_size."""
    from transformers import AutoImageProcessor

    config = _config(folder)
    try:
        processor = AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError):
        processor = None  # no preprocessor_config.json: the config's image_size
    if processor is not None:
        crop = (
            getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", True) is not False else None
        )
        side = _edge(crop) or _edge(getattr(processor, "size", None))
        if side:
            return side
    side = getattr(config, "image_size", None)
    if isinstance(side, (list, tuple)):
        side = side[0] if len(set(side)) == 1 else None
    if not side:
        raise UserError(f"hf:{folder}: no image processor and no image_size in its config: the image size is unknown")
    return int(side)


def hf_input_kind(folder: Path) -> str | None:
    """image, text or audio: what a Hugging Face model reads, by its main input (pixel_values, input_ids,
    input_values or input_features); None for another input."""
    import transformers
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    config = _config(folder)
    name = MODEL_MAPPING_NAMES.get(config.model_type)
    name = name[0] if isinstance(name, (list, tuple)) else name
    model = getattr(transformers, name, None) if name else None
    return _MAIN_INPUT_KINDS.get(getattr(model, "main_input_name", ""))


# ---- the input steps, shared by prepare and predict --------------------------------------------------------------


class TokenStep:
    """Texts -> N x 2 x L int64: the input ids and the attention mask of the folder's tokenizer, padded or cut to
    L tokens, so every row has one shape and a net reads both from one tensor."""

    def __init__(self, folder: str, max_length: int) -> None:
        from transformers import AutoTokenizer

        _quiet_transformers()
        path = Path(folder).expanduser()
        _config(path)
        if not any((path / name).is_file() for name in TOKENIZER_FILES):
            # transformers would build an empty-vocabulary tokenizer from the config alone: every word unknown
            raise UserError(f"hf:{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"hf:{folder}: no usable tokenizer files ({_first_line(exc)})") from None
        if self.tokenizer.pad_token is None:
            if self.tokenizer.eos_token is None:
                raise UserError(f"hf:{folder}: its tokenizer has no padding token, so texts cannot share one length")
            self.tokenizer.pad_token = self.tokenizer.eos_token  # masked out by the attention mask
        self.max_length = int(max_length)
        self.vocab_size = len(self.tokenizer)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TokenStep:
        return cls(str(state["tokenizer"]), int(state["max_length"]))

    def __call__(self, texts: list[str]) -> np.ndarray:
        encoded = self.tokenizer(
            list(texts), padding="max_length", truncation=True, max_length=self.max_length, return_tensors="np"
        )
        ids = np.asarray(encoded["input_ids"], dtype=np.int64)
        mask = np.asarray(encoded.get("attention_mask", np.ones_like(ids)), dtype=np.int64)
        return np.stack([ids, mask], axis=1)


class AudioStep:
    """Clips (N x window float32, mono, at ``rate``) -> the rows a Hugging Face audio net reads: the output
    ``key`` of the folder's feature extractor, or the window itself when the folder has no extractor."""

    def __init__(self, folder: str, rate: int, key: str, extractor: Any) -> None:
        self.folder, self.rate, self.key, self.extractor = folder, int(rate), key, extractor

    @classmethod
    def for_model(cls, model: str) -> AudioStep:
        """The step of a Hugging Face audio model folder: its extractor and rate, or the raw clip at the config's
        sampling_rate (16000 when it has none)."""
        from transformers import AutoFeatureExtractor

        path = Path(model).expanduser()
        config = _config(path)
        try:
            extractor = AutoFeatureExtractor.from_pretrained(str(path), local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError):
            rate = int(getattr(config, "sampling_rate", 0) or DEFAULT_RATE)
            return cls("", rate, "input_values", None)
        return cls(model, int(extractor.sampling_rate), str(extractor.model_input_names[0]), extractor)

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> AudioStep:
        if not state.get("extractor"):
            return cls("", int(state["sample_rate"]), str(state["key"]), None)
        step = cls.for_model(str(state["extractor"]))
        if step.rate != int(state["sample_rate"]) or step.key != state["key"]:
            raise UserError(
                f"hf:{state['extractor']}: its feature extractor changed since prepare; run `mst prepare` again"
            )
        return step

    def window(self, clip_seconds: float) -> int:
        return int(round(clip_seconds * self.rate))

    def row_shape(self, clip_seconds: float) -> tuple[int, ...]:
        """One row's shape, from the step on a silent clip (Whisper pads to 30 s, AST to 1024 frames)."""
        return tuple(self(np.zeros((1, self.window(clip_seconds)), dtype=np.float32)).shape[1:])

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float32)
        if self.extractor is None:
            return windows
        out = self.extractor(list(windows), sampling_rate=self.rate, return_tensors="np")
        return np.asarray(out[self.key], dtype=np.float32)


# ---- the check before training ------------------------------------------------------------------------------------


def check_inputs(features: Any, readers: dict[str, list[NetChoice]], prepare_params: Any) -> None:
    """Refuse, in one line, a feature file whose stored rows do not fit the nets that will read them (a file
    prepared for other nets); cheap: it reads the file's records, not its rows, and a Hugging Face folder only
    when the stored state cannot tell. ``features`` is a store.FeatureFile, ``readers`` maps a modality to its nets
    (:meth:`Readers.mapping`), ``prepare_params`` the run's config.PrepareParams (unused by the checks so far:
    the stored state says what prepare did)."""
    for modality, nets in readers.items():
        if modality not in features.modalities:
            continue
        state = features.transform(modality) or {}
        if features.dataset == "folder" and "kind" in state:
            _check_folder_modality(modality, state, nets)
        else:
            _check_feature_modality(features, modality, nets)


def _refuse(modality: str, stored: str, made: Iterable[str], need: str, nets: list[NetChoice], why: str = "") -> None:
    raise UserError(
        f"modality '{modality}' is stored as {stored} (made for {', '.join(made) or 'auto'}) but "
        f"{', '.join(made_for(nets))} need {need}{why}; run `mst prepare` again"
    )


def _check_feature_modality(features: Any, modality: str, nets: list[NetChoice]) -> None:
    """A built-in data set stores float features: image-like nets read them as maps, but a Hugging Face text or
    audio net needs tokens or a waveform, which only a folder can be prepared as."""
    for net in nets:
        if net.kind != "hf":
            continue
        kind = hf_input_kind(hf_folder(net))
        if kind in ("text", "audio"):
            raise UserError(
                f"modality '{modality}' of {features.dataset} is stored as features (float32 "
                f"{' x '.join(map(str, features.modalities[modality]))}) but {net.text} needs "
                f"{'tokens' if kind == 'text' else 'a waveform'}; run `mst prepare` again with a folder data set "
                "(common.dataset=folder): the built-in data sets are prepared as features only"
            )


def _check_folder_modality(modality: str, state: dict[str, Any], nets: list[NetChoice]) -> None:
    stored, made = str(state.get("form", "features")), state.get("made_for", ["auto"])
    need = needed_form(modality, str(state["kind"]), nets)
    family = "audio" if stored in AUDIO_FORMS else stored
    if family != need.form:
        _refuse(modality, stored, made, "a waveform or extractor features" if need.form == "audio" else need.form, nets)
    if need.form == "tokens" and not _same_folder(need.hf[0], state.get("tokenizer", "")):
        _refuse(
            modality, stored, made, f"tokens of hf:{need.hf[0]}", nets, f" (stored: of hf:{state.get('tokenizer')})"
        )
    if need.form == "audio" and not _same_folder(need.hf[0], state.get("model", "")):
        _refuse(modality, stored, made, f"the clip through hf:{need.hf[0]}", nets)
    if need.form == "pixels":
        size = int(state.get("size", 0))
        for folder in need.hf:
            wanted = (
                size if _same_folder(folder, state.get("processor", "")) else hf_image_size(Path(folder).expanduser())
            )
            if wanted != size:
                _refuse(
                    modality, f"{stored} of {size} x {size}", made, f"{wanted} x {wanted} pixels (hf:{folder})", nets
                )
