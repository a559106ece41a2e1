"""Backbones with a K-way head and a ``features`` method (the penultimate layer).

Every model is a :class:`FeatureClassifier`: ``trunk`` maps an image batch to the feature
vector the paper evaluates (Fang §4.1: AlexNet FC6; ResNet/RegNet: the pooled vector;
MobileNetV3: the 1024-d pre-logit layer), ``head`` is dropout + the K-way classifier.
``forward(x) = head(trunk(x))`` and ``features(x) = trunk(x)``.

Nothing is downloaded: weights are random (torchvision's own initialisation, seeded by the
caller's ``torch.manual_seed``) or read from a local file with ``torch.load(weights_only=True)``
— a torchvision ImageNet state dict (``resnet18-f37072fd.pth`` and friends) or a cfvision
checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cfcore.errors import InputError, ModelFormatError

ARCHITECTURES = ("alexnet", "resnet18", "mobilenet_v3_small", "regnet_y_400mf", "small")


class FeatureClassifier(nn.Module):
    """``trunk`` (image → features) followed by ``head`` (features → K logits)."""

    def __init__(self, arch: str, trunk: nn.Module, head: nn.Module, feature_dim: int) -> None:
        super().__init__()
        self.arch = arch
        self.trunk = trunk
        self.head = head
        self.feature_dim = feature_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, ``(batch, feature_dim)`` (not normalised)."""
        return self.trunk(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(x))

    @property
    def num_classes(self) -> int:
        last = [m for m in self.head.modules() if isinstance(m, nn.Linear)][-1]
        return last.out_features


class MultitaskNet(FeatureClassifier):
    """A :class:`FeatureClassifier` with a second head that predicts a CF vector.

    Bibas et al. 2022 (§3.4): the shared trunk feeds the label head (``logits``) and a CF
    head ``BN → Linear → BN → ReLU → Linear`` to the ``cf_dim`` dimensions of the item's CF
    vector (``cf``). The CF head's last layer starts at zero, so the first reconstructions
    are the zero vector — the mean of the centred targets — and the reconstruction loss starts
    near ``exp(1)`` instead of exploding (:mod:`cfvision.multitask`).

    ``forward`` returns ``{"logits": (B, K), "cf": (B, cf_dim)}``; ``features`` is the
    trunk's output, as for every model.
    """

    def __init__(
        self,
        arch: str,
        trunk: nn.Module,
        head: nn.Module,
        feature_dim: int,
        cf_dim: int,
        cf_hidden: int | None = None,
    ) -> None:
        super().__init__(arch, trunk, head, feature_dim)
        hidden = cf_hidden or feature_dim
        self.cf_dim = cf_dim
        last = nn.Linear(hidden, cf_dim)
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        self.cf_head = nn.Sequential(
            nn.BatchNorm1d(feature_dim),
            nn.Linear(feature_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            last,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        f = self.trunk(x)
        return {"logits": self.head(f), "cf": self.cf_head(f)}


def build_multitask_model(
    arch: str,
    num_classes: int,
    cf_dim: int,
    weights: str | os.PathLike[str] | None = None,
    dropout: float = 0.5,
) -> MultitaskNet:
    """:func:`build_model`'s backbone and label head, plus a CF head of ``cf_dim`` outputs."""
    if cf_dim < 1:
        raise InputError(f"cf_dim must be >= 1, got {cf_dim}")
    base = build_model(arch, num_classes, weights, dropout)
    return MultitaskNet(base.arch, base.trunk, base.head, base.feature_dim, cf_dim)


class SmallCNN(nn.Module):
    """A 4-conv network for CPU tests and quick runs (≈0.1 M parameters).

    conv3×3(3→16)-BN-ReLU-pool, (16→32)-pool, (32→64)-pool, (64→128), global average pool,
    then FC 128→``width`` + ReLU (the "FC6" of this net: its penultimate layer).
    """

    def __init__(self, width: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int, pool: bool) -> list[nn.Module]:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            return layers + ([nn.MaxPool2d(2)] if pool else [])

        self.body = nn.Sequential(
            *block(3, 16, True),
            *block(16, 32, True),
            *block(32, 64, True),
            *block(64, 128, False),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.fc = nn.Sequential(nn.Linear(128, width), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.body(x))


def _torchvision_model(arch: str) -> nn.Module:
    from torchvision import models as tvm

    return getattr(tvm, arch)(weights=None)  # weights=None: never downloads


def _wrap(arch: str, net: nn.Module, num_classes: int, dropout: float) -> FeatureClassifier:
    """Split a torchvision model into trunk (to the penultimate layer) and a new K-way head."""
    if arch == "alexnet":
        # FC6 (Fang §4.1): convs → pool → dropout → Linear(9216, 4096) → ReLU.
        trunk = nn.Sequential(net.features, net.avgpool, nn.Flatten(), *net.classifier[:3])
        head = nn.Sequential(
            nn.Dropout(dropout),
            net.classifier[4],
            nn.ReLU(inplace=True),
            nn.Linear(4096, num_classes),
        )
        return FeatureClassifier(arch, trunk, head, 4096)
    if arch == "resnet18":
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return FeatureClassifier(
            arch, net, nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes)), dim
        )
    if arch == "regnet_y_400mf":
        dim = net.fc.in_features
        net.fc = nn.Identity()
        return FeatureClassifier(
            arch, net, nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes)), dim
        )
    if arch == "mobilenet_v3_small":
        dim = net.classifier[0].out_features
        trunk = nn.Sequential(
            net.features, net.avgpool, nn.Flatten(), net.classifier[0], net.classifier[1]
        )
        return FeatureClassifier(
            arch, trunk, nn.Sequential(nn.Dropout(dropout), nn.Linear(dim, num_classes)), dim
        )
    if arch == "small":
        return FeatureClassifier(
            arch,
            net,
            nn.Sequential(nn.Dropout(dropout), nn.Linear(net.fc[0].out_features, num_classes)),
            net.fc[0].out_features,
        )
    raise InputError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    if not path.is_file():
        raise InputError(f"weights file {path}: no such file")
    what = describe_file(path)
    if what not in ("a torch file", "a pickle or legacy torch file"):
        raise ModelFormatError(f"{path}: not a torch weights file: it is {what}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # unsafe globals, truncated data: never suggest unsafe loading
        raise ModelFormatError(
            f"{path}: {what} that cannot be read with weights_only=True ({type(exc).__name__})"
        ) from None
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a training checkpoint (cfvision's or torchvision's reference script)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelFormatError(f"{path}: expected a state dict (name → tensor)")
    return obj


def build_model(
    arch: str, num_classes: int, weights: str | os.PathLike[str] | None = None, dropout: float = 0.5
) -> FeatureClassifier:
    """A backbone with a fresh K-way head.

    Parameters
    ----------
    arch : str
        One of :data:`ARCHITECTURES`.
    num_classes : int
        K, the number of (pseudo-)classes.
    weights : path-like, optional
        A local torchvision state dict (e.g. ImageNet weights) for the backbone; its own
        classifier layer is dropped. ``None``: random initialisation (seed with
        ``torch.manual_seed`` first for reproducibility).
    dropout : float
        Dropout before the classifier (Fang §4.1 trains with dropout; AlexNet's 0.5).
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")
    if num_classes < 1:
        raise InputError(f"num_classes must be >= 1, got {num_classes}")
    if not 0.0 <= dropout < 1.0:
        raise InputError(f"dropout must lie in [0, 1), got {dropout}")
    net = SmallCNN() if arch == "small" else _torchvision_model(arch)
    if weights is not None:
        path = Path(weights)
        state = dict(_read_state_dict(path))
        own = net.state_dict()
        if any(k.startswith(("trunk.", "head.")) for k in state):  # a cfvision checkpoint
            raise InputError(
                f"{path}: a cfvision checkpoint, not backbone weights; use it with "
                "`cfvision extract --checkpoint` or `cfvision train --resume`"
            )
        usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        if not usable:
            raise ModelFormatError(
                f"{path}: no tensor matches a {arch} backbone (first keys: {list(state)[:3]})"
            )
        skipped = sorted(set(own) - set(usable))
        # Only the final classifier may be absent or of another shape (1000 ImageNet classes).
        final = {
            "alexnet": "classifier.6.",
            "resnet18": "fc.",
            "regnet_y_400mf": "fc.",
            "mobilenet_v3_small": "classifier.3.",
            "small": "\0",
        }[arch]
        missing = [k for k in skipped if not k.startswith(final)]
        if missing:
            raise ModelFormatError(
                f"{path}: does not fit {arch}: {len(missing)} tensors missing "
                f"or of another shape (e.g. {missing[:3]})"
            )
        net.load_state_dict(usable, strict=False)
    return _wrap(arch, net, num_classes, dropout)


def model_from_checkpoint(
    state: Mapping[str, Any], path: str | os.PathLike[str] = "checkpoint"
) -> FeatureClassifier:
    """Rebuild the model stored in a cfvision checkpoint (``arch``, ``num_classes``, ``model``;
    with ``cf_dim``, the :class:`MultitaskNet` of a ``cfvision multitask`` run)."""
    for key in ("arch", "num_classes", "model"):
        if key not in state:
            raise ModelFormatError(f"{path}: not a cfvision checkpoint (no {key!r})")
    dropout = float(state.get("dropout", 0.5))
    if state.get("cf_dim"):  # a `cfvision multitask` run
        model: FeatureClassifier = build_multitask_model(
            str(state["arch"]), int(state["num_classes"]), int(state["cf_dim"]), dropout=dropout
        )
    else:
        model = build_model(str(state["arch"]), int(state["num_classes"]), dropout=dropout)
    model.load_state_dict(state["model"])
    return model


def describe_file(path: str | os.PathLike[str]) -> str:
    """What a file is, in a few words, for errors about files of the wrong kind."""
    import zipfile

    path = Path(path)
    if path.is_dir():
        return "a folder"
    with open(path, "rb") as fh:
        head = fh.read(2048)
    if not head:
        return "an empty file"
    if head.startswith(b"PK"):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except zipfile.BadZipFile:
            return "a damaged zip archive"
        if names and all(n.endswith(".npy") for n in names):
            from cfcore.io import load_artifact

            try:
                _, header = load_artifact(path)
            except ModelFormatError:
                return "a NumPy .npz archive (not written by collabfeat)"
            return f"a collabfeat {header.get('kind')!r} file (.npz)"
        if any(n.endswith("data.pkl") for n in names):
            return "a torch file"
        return "a zip archive"
    magic = {
        b"\x89PNG": "a PNG image",
        b"\xff\xd8\xff": "a JPEG image",
        b"GIF8": "a GIF image",
        b"\x93NUMPY": "a NumPy .npy array",
    }
    for prefix, what in magic.items():
        if head.startswith(prefix):
            return what
    if head.startswith(b"\x80"):
        return "a pickle or legacy torch file"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return "a binary file of unknown format"
    first = text.splitlines()[0][:60] if text.strip() else ""
    return f"a text file (first line: {first!r})"


def load_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Read a cfvision checkpoint with ``weights_only=True`` (no pickle of arbitrary objects).

    Raises
    ------
    InputError
        No such file.
    ModelFormatError
        The file is not a cfvision checkpoint; the message says what it is instead.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path}: no such file")
    what = describe_file(path)
    if what not in ("a torch file", "a pickle or legacy torch file"):
        raise ModelFormatError(f"{path}: not a cfvision checkpoint: it is {what}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # unsafe globals, truncated data: never suggest unsafe loading
        raise ModelFormatError(
            f"{path}: not a cfvision checkpoint: {what} that cannot be read with "
            f"weights_only=True ({type(exc).__name__})"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "arch" not in state:
        keys = list(state)[:3] if isinstance(state, dict) else type(state).__name__
        hint = (
            "; a torch state dict (backbone weights?) is used with --arch ... --weights FILE"
            if isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
            else ""
        )
        raise ModelFormatError(
            f"{path}: not a cfvision checkpoint (a torch file holding {keys}, no "
            f"'model'/'arch' entries){hint}"
        )
    return state
