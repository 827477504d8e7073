"""The dataset contract and the dataset registry (torch-free: the app may import it in HTTP mode).

A data set (`DatasetSpec`) is: a short name (the `dataset` of model cards and data roots), a label,
its class names in label order, the square image side in pixels that images are decoded to, the
per-channel mean colour of its training images (RGB in [0, 1], for display and "mean" baselines),
one display colour per class (`colours`, from `palette`), and where its images come from: an
ImageFolder tree (always), a torchvision root folder (`torchvision_dir`, read by torchvision's own
reader, the class `torchvision_class`) and offline sample images shipped inside an installed package
(`samples`).

Class folders of a registered data set may be named by class name or by the class's folder id
(`folder_ids`: ImageNet's WordNet ids, n01440764 ..., as a real ImageNet val/ folder and Imagenette
name them), in any order; each folder's images get that class's label. A folder holding only some
of the classes (Imagenette: 10 of ImageNet's 1000) loads with labels in the full data set's index
space, so a model of the full data set scores it, and its data variant says `<name>-subsetK-...`.
A folder name that is neither a class name nor an id is refused (the error names a few).

A name that is not registered still loads as an ImageFolder tree (`spec_for`): its classes are the
folder names (sorted), its images are decoded to DEFAULT_IMAGE_SIZE unless the data root holds a
manifest, `dataset.json` (MANIFEST), stating the data set's own settings (`read_manifest`):

    {"label": "Imagenette (160 px)", "image_size": 160, "mean": [0.46, 0.46, 0.43]}

every key optional: "label" (text shown in the UI, default the name), "image_size" (the square
side images are decoded to, an integer in [8, 1024]), "mean" (three values in [0, 1]), "name"
(when given, the data set name it must be loaded under). Any other key, or a bad value, is a
ValueError that names it. A registered data set takes its settings from the registry only (a
manifest beside it is ignored, with a log line).

How to add a data set (one new module plus its test; no other file changes):
1. New module backend/core/dataset_specs/<name>.py (every module there is imported on first use of
   the registry) ending in `register_dataset(DatasetSpec("name", "Label", classes=(...),
   image_size=S, mean=(r, g, b)))` (classes in label order; S the side models take).
2. Set `torchvision_dir` and `torchvision_class` if a torchvision dataset class reads it, `samples`
   for images a package ships.
3. Put the images in an ImageFolder tree DIR/train/<class>/..., DIR/test/<class>/... (<class> a
   class name or its folder id; DIR/val/ is the test split when DIR has no test/, ImageNet's layout);
   `load_split(DIR, "test", dataset="name")` gives (N, S, S, 3) uint8 images.
4. Test it as tests/test_contracts.py does the CIFAR-100-shaped entry.
"""
from __future__ import annotations

import colorsys
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from backend.core.registry import Registry

log = logging.getLogger(__name__)

DEFAULT_IMAGE_SIZE = 32
MAX_IMAGE_SIZE = 1024        # the largest side a manifest may ask for (a 1024 px split is 3 MB per image)
MANIFEST = "dataset.json"    # an unregistered data set's settings, in its data root
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

# Tableau 10: the first ten class colours of every palette (plots, bars and legends share them).
_TABLEAU10 = ("#4C78A8", "#F58518", "#E45756", "#72B7B2", "#54A24B", "#EECA3B", "#B279A2", "#FF9DA6",
              "#9D755D", "#BAB0AC")


def palette(n: int) -> tuple[str, ...]:
    """n distinct '#rrggbb' colours: Tableau 10 for n <= 10, else n hues around the colour wheel
    (golden-ratio steps, alternating lightness and saturation so neighbours differ)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"a palette needs a positive number of colours, got {n!r}")
    if n <= len(_TABLEAU10):
        return _TABLEAU10[:n]
    out = []
    for i in range(n):
        h = (i * 0.618033988749895) % 1.0
        light, sat = (0.45, 0.65) if i % 2 == 0 else (0.60, 0.55)
        r, g, b = colorsys.hls_to_rgb(h, light, sat)
        out.append(f"#{round(r * 255):02X}{round(g * 255):02X}{round(b * 255):02X}")
    return tuple(out)


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    label: str
    classes: tuple[str, ...]
    image_size: int = DEFAULT_IMAGE_SIZE
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    torchvision_dir: str | None = None         # folder inside a torchvision root, e.g. cifar-10-batches-py
    torchvision_class: str | None = None       # the torchvision.datasets class reading it, e.g. CIFAR10
    samples: str | None = None                 # "package:file-regex" of offline samples (label = group 2)
    colours: tuple[str, ...] = field(default=())
    folder_ids: tuple[str, ...] = ()           # another folder name per class (ImageNet: WordNet ids), or ()
    order: int = 100                           # menu position (ties: registration order)

    def __post_init__(self) -> None:
        if not NAME_RE.match(self.name):
            raise ValueError(f"dataset name must be a short lower-case name, got {self.name!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"dataset {self.name!r} needs at least two distinct class names")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if len(self.mean) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.mean):
            raise ValueError(f"mean must be three values in [0, 1], got {self.mean!r}")
        if (self.torchvision_dir is None) != (self.torchvision_class is None):
            raise ValueError(f"dataset {self.name!r}: torchvision_dir and torchvision_class go together, got "
                             f"{self.torchvision_dir!r} and {self.torchvision_class!r}")
        if not self.colours:
            object.__setattr__(self, "colours", palette(len(self.classes)))
        elif len(self.colours) != len(self.classes):
            raise ValueError(f"{len(self.colours)} colours for {len(self.classes)} classes")
        if self.folder_ids:
            if len(self.folder_ids) != len(self.classes) or len(set(self.folder_ids)) != len(self.folder_ids):
                raise ValueError(f"dataset {self.name!r}: folder_ids must be {len(self.classes)} distinct names, "
                                 f"one per class (got {len(self.folder_ids)}, {len(set(self.folder_ids))} distinct)")
            for k, fid in enumerate(self.folder_ids):
                if fid in self.classes and self.classes.index(fid) != k:
                    raise ValueError(f"dataset {self.name!r}: folder id {fid!r} of class {k} is the name of "
                                     f"class {self.classes.index(fid)}")

    def folder_index(self) -> dict[str, int]:
        """Class folder name -> label: every class name and every folder id (folder_ids)."""
        out = {fid: k for k, fid in enumerate(self.folder_ids)}
        out.update((c, k) for k, c in enumerate(self.classes))
        return out

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """Plain-data form (for the service's limits() and the UI)."""
        return {"name": self.name, "label": self.label, "classes": list(self.classes),
                "num_classes": self.num_classes, "image_size": self.image_size, "mean": list(self.mean),
                "colours": list(self.colours), "torchvision": self.torchvision_dir is not None,
                "samples": self.samples is not None}


# The built-in data sets are the modules of backend/core/dataset_specs/, found on first use.
REGISTRY: Registry[DatasetSpec] = Registry("dataset", DatasetSpec, package="backend.core.dataset_specs",
                                            order=lambda d: d.order)


def register_dataset(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    """Add a data set. ValueError if the name is taken (unless replace)."""
    return REGISTRY.register(spec, replace)


def unregister_dataset(name: str) -> None:
    REGISTRY.unregister(name)


def names() -> list[str]:
    """Registered data sets, in their `order` (CIFAR-10 first)."""
    return REGISTRY.names()


def get_dataset(name: str) -> DatasetSpec:
    """The data set called `name`; ValueError naming the known ones otherwise."""
    return REGISTRY.get(name)


def find_dataset(name: str) -> DatasetSpec | None:
    return REGISTRY.find(name)


def image_size_of(name: str, root: str | Path | None = None) -> int:
    """The image side of a registered data set; for an unregistered name the one the manifest in
    `root` states (read_manifest), else DEFAULT_IMAGE_SIZE."""
    spec = find_dataset(name)
    if spec is not None:
        return spec.image_size
    manifest = read_manifest(root, name) if root is not None else None
    return int(manifest.get("image_size", DEFAULT_IMAGE_SIZE)) if manifest else DEFAULT_IMAGE_SIZE


_MANIFEST_KEYS = ("name", "label", "image_size", "mean")


def read_manifest(root: str | Path, name: str | None = None) -> dict | None:
    """The checked settings of `root/dataset.json` (MANIFEST; keys as the module docstring says),
    or None when the root has none. ValueError (naming the file and the key) for a file that is
    not a JSON object, an unknown key, a bad value, or a "name" other than `name`."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON file ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must hold a JSON object such as {{\"image_size\": 160}}, "
                         f"got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(_MANIFEST_KEYS))
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; allowed: {list(_MANIFEST_KEYS)}")
    out: dict = {}
    if "name" in raw:
        if not isinstance(raw["name"], str) or not NAME_RE.match(raw["name"]):
            raise ValueError(f"{path}: name must be a short lower-case name, got {raw['name']!r}")
        if name is not None and raw["name"] != name:
            raise ValueError(f"{path}: this data root is data set {raw['name']!r}, not {name!r}")
        out["name"] = raw["name"]
    if "label" in raw:
        if not isinstance(raw["label"], str) or not 0 < len(raw["label"].strip()) <= 80:
            raise ValueError(f"{path}: label must be a text of 1 to 80 characters, got {raw['label']!r}")
        out["label"] = raw["label"].strip()
    if "image_size" in raw:
        v = raw["image_size"]
        if isinstance(v, bool) or not isinstance(v, int) or not 8 <= v <= MAX_IMAGE_SIZE:
            raise ValueError(f"{path}: image_size must be an integer in [8, {MAX_IMAGE_SIZE}], got {v!r}")
        out["image_size"] = v
    if "mean" in raw:
        v = raw["mean"]
        if not (isinstance(v, list) and len(v) == 3 and all(
                isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 1 for c in v)):
            raise ValueError(f"{path}: mean must be a list of three numbers in [0, 1], got {v!r}")
        out["mean"] = tuple(float(c) for c in v)
    return out


def spec_for(name: str, classes: tuple[str, ...] | list[str], root: str | Path | None = None) -> DatasetSpec:
    """The spec a data root is read with: the registered one for a registered name (a manifest in
    root is then ignored), else one built from `classes` (the tree's folder names) and the manifest
    in `root` (read_manifest; label, image side and mean; defaults without one). Not registered."""
    spec = find_dataset(name)
    manifest = read_manifest(root, name) if root is not None else None
    if spec is not None:
        if manifest is not None:
            log.info("%s: ignored, %s is a registered data set (its settings come from the registry)",
                     Path(root or ".") / MANIFEST, name)  # type: ignore[arg-type]
        return spec
    m = manifest or {}
    return DatasetSpec(name, m.get("label", name), tuple(classes), image_size=m.get("image_size", DEFAULT_IMAGE_SIZE),
                       mean=m.get("mean", (0.5, 0.5, 0.5)))


def class_colours(n: int, dataset: str | None = None) -> tuple[str, ...]:
    """Display colours of n classes: the data set's own when it has n classes, else palette(n)."""
    spec = find_dataset(dataset) if dataset else None
    return spec.colours if spec is not None and spec.num_classes == n else palette(n)


# the built-in data sets' specs, by the names the code used before they moved into dataset_specs/
_BUILTIN_CONSTANTS = {"CIFAR10": "cifar10", "CIFAR100": "cifar100", "IMAGENET": "imagenet"}


def __getattr__(name: str) -> DatasetSpec:
    if name in _BUILTIN_CONSTANTS:
        return get_dataset(_BUILTIN_CONSTANTS[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
