"""The model registry: each data set's family of nets (the MM teacher and one net per modality).

A family names the constructors; the nets are sized from the feature file's per-sample shapes and its
number of classes. A new data set adds one ``Family`` here (and its nets in a module of this package).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from mstcli.errors import UserError
from mstcli.models.avdigits3 import ThreeViewCNNI
from mstcli.models.avmnist import CNNI, LeNet5, ThreeLayerCNNA
from mstcli.models.crisismmd import MLPI, MLPBranch
from mstcli.models.folder import FolderFusionNet, FolderMapNet, FolderVectorNet, unimodal_net_name
from mstcli.models.nyudepth import FuseNetDepthBranch, FuseNetI, FuseNetRGBBranch
from mstcli.models.ravdess import DSCNNI, AudioBranchNet, VisualBranchNet
from mstcli.models.vggsound import DSCNNVGGSI, AudioBranchNetVGGS, VisualBranchNetVGGS

UnimodalFactory = Callable[..., nn.Module]  # (per-sample shape, classes, **options) -> net
MultimodalFactory = Callable[..., nn.Module]  # ((shape of each modality, in order), classes, **options) -> net

UNIMODAL_NETS: dict[str, UnimodalFactory] = {
    "lenet5": LeNet5,
    "three_layer_cnn_a": ThreeLayerCNNA,
    "visual_branch_net": VisualBranchNet,
    "audio_branch_net": AudioBranchNet,
    "visual_branch_net_vggs": VisualBranchNetVGGS,
    "audio_branch_net_vggs": AudioBranchNetVGGS,
    "mlp_vb": MLPBranch,
    "mlp_tb": MLPBranch,
    "fusenet_rgb_branch": FuseNetRGBBranch,
    "fusenet_depth_branch": FuseNetDepthBranch,
    "folder_map_net": FolderMapNet,
    "folder_vector_net": FolderVectorNet,
}
MULTIMODAL_NETS: dict[str, MultimodalFactory] = {
    "cnn_i": CNNI,
    "three_view_cnn_i": ThreeViewCNNI,
    "dscnn_i": DSCNNI,
    "dscnn_vggs_i": DSCNNVGGSI,
    "mlp_i": MLPI,
    "fusenet_i": FuseNetI,
    "folder_fusion_net": FolderFusionNet,
}


@dataclass(frozen=True)
class Family:
    """The reference model set of a data set: the MM net (inputs in ``modalities`` order) and a unimodal net per
    modality. The CM teacher of a run is the unimodal net of the modality that is not the student's."""

    modalities: tuple[str, ...]
    multimodal: str
    unimodal: dict[str, str]
    task: str = "classification"  # or "segmentation": logits and labels per pixel (methods/tasks.py)
    scalable: bool = False  # the nets take ``width_divisor`` (train.width_divisor)


FAMILIES: dict[str, Family] = {
    "avdigits": Family(("image", "audio"), "cnn_i", {"image": "lenet5", "audio": "three_layer_cnn_a"}),
    "avmnist": Family(("image", "audio"), "cnn_i", {"image": "lenet5", "audio": "three_layer_cnn_a"}),
    # three views: AV-Digits' nets for image and audio, an MLP for the 8x8 scan, CNN-I with a scan branch as MM net
    "avdigits3": Family(
        ("image", "audio", "scan"),
        "three_view_cnn_i",
        {"image": "lenet5", "audio": "three_layer_cnn_a", "scan": "folder_vector_net"},
    ),
    "ravdess": Family(("visual", "audio"), "dscnn_i", {"visual": "visual_branch_net", "audio": "audio_branch_net"}),
    "vggsound": Family(
        ("visual", "audio"), "dscnn_vggs_i", {"visual": "visual_branch_net_vggs", "audio": "audio_branch_net_vggs"}
    ),
    "crisismmd": Family(("image", "text"), "mlp_i", {"image": "mlp_vb", "text": "mlp_tb"}),
    "nyudepth": Family(
        ("rgb", "depth"),
        "fusenet_i",
        {"rgb": "fusenet_rgb_branch", "depth": "fusenet_depth_branch"},
        task="segmentation",
        scalable=True,
    ),
}


#: data sets whose modalities the data names (a user's folder): the family is read off the stored shapes
SHAPED_BY_DATA = {"folder": "folder_fusion_net"}


def family(dataset: str, shapes: dict[str, tuple[int, ...]] | None = None) -> Family:
    """The nets of ``dataset``; for a data set shaped by its data, ``shapes`` (modality -> per-sample shape, in
    the feature file's order) choose them: maps get a small CNN, everything else an MLP."""
    if dataset in SHAPED_BY_DATA:
        if shapes is None:
            raise ValueError(f"the nets of '{dataset}' depend on its modalities' shapes")
        return Family(
            tuple(shapes), SHAPED_BY_DATA[dataset], {m: unimodal_net_name(s) for m, s in shapes.items()}
        )
    if dataset not in FAMILIES:
        raise UserError(f"no model family for data set '{dataset}' (known: {', '.join(FAMILIES)})")
    return FAMILIES[dataset]


def other_modalities(fam: Family, student: str) -> tuple[str, ...]:
    """The modalities of the CM teachers: every modality but the student's, in the family's order."""
    if student not in fam.modalities:
        raise UserError(f"common.student must be one of {', '.join(fam.modalities)}, got '{student}'")
    if len(fam.modalities) < 2:
        raise UserError(f"the data have one modality ({fam.modalities[0]}); distillation needs at least two")
    return tuple(m for m in fam.modalities if m != student)


def build_unimodal(name: str, shape: tuple[int, ...], num_classes: int, **options) -> nn.Module:
    return UNIMODAL_NETS[name](tuple(shape), num_classes, **options)


def build_multimodal(name: str, shapes: tuple[tuple[int, ...], ...], num_classes: int, **options) -> nn.Module:
    return MULTIMODAL_NETS[name](tuple(tuple(shape) for shape in shapes), num_classes, **options)
