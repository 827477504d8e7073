"""The dataset contract and the dataset registry (torch-free: the app may import it in HTTP mode).

A data set (`DatasetSpec`) is: a short name (the `dataset` of model cards and data roots), a label,
its class names in label order, the square image side in pixels that images are decoded to, the
per-channel mean colour of its training images (RGB in [0, 1], for display and "mean" baselines),
one display colour per class (`colours`, from `palette`), and where its images come from: an
ImageFolder tree (always), a torchvision root folder (`torchvision_dir`, read by torchvision's own
reader) and offline sample images shipped inside an installed package (`samples`).

A name that is not registered still loads as an ImageFolder tree (`spec_or_default`): its classes
are the folder names and its images are decoded to DEFAULT_IMAGE_SIZE.

How to add a data set (five lines):
1. `register_dataset(DatasetSpec("name", "Label", classes=(...), image_size=S, mean=(r, g, b)))`
   in a module imported before use (classes in label order; S the side models take).
2. Set `torchvision_dir` if a torchvision dataset class reads it (and name the class in
   backend.core.imagefiles._TV_CLASSES), `samples` for images a package ships.
3. Put the images in an ImageFolder tree DIR/train/<class>/..., DIR/test/<class>/...
4. `load_split(DIR, "test", dataset="name")` gives (N, S, S, 3) uint8 images.
5. Test it as tests/test_contracts.py does the CIFAR-100-shaped entry.
"""
from __future__ import annotations

import colorsys
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_IMAGE_SIZE = 32
_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")

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
    samples: str | None = None                 # "package:file-regex" of offline samples (label = group 2)
    colours: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"dataset name must be a short lower-case name, got {self.name!r}")
        if len(self.classes) < 2 or len(set(self.classes)) != len(self.classes):
            raise ValueError(f"dataset {self.name!r} needs at least two distinct class names")
        if isinstance(self.image_size, bool) or not isinstance(self.image_size, int) or self.image_size < 8:
            raise ValueError(f"image_size must be an integer >= 8, got {self.image_size!r}")
        if len(self.mean) != 3 or not all(0.0 <= float(c) <= 1.0 for c in self.mean):
            raise ValueError(f"mean must be three values in [0, 1], got {self.mean!r}")
        if not self.colours:
            object.__setattr__(self, "colours", palette(len(self.classes)))
        elif len(self.colours) != len(self.classes):
            raise ValueError(f"{len(self.colours)} colours for {len(self.classes)} classes")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict:
        """Plain-data form (for the service's limits() and the UI)."""
        return {"name": self.name, "label": self.label, "classes": list(self.classes),
                "num_classes": self.num_classes, "image_size": self.image_size, "mean": list(self.mean),
                "colours": list(self.colours), "torchvision": self.torchvision_dir is not None,
                "samples": self.samples is not None}


_REGISTRY: dict[str, DatasetSpec] = {}
_LOCK = threading.Lock()


def register_dataset(spec: DatasetSpec, replace: bool = False) -> DatasetSpec:
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"register_dataset needs a DatasetSpec, got {type(spec).__name__}")
    with _LOCK:
        if spec.name in _REGISTRY and not replace:
            raise ValueError(f"dataset {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    with _LOCK:
        _REGISTRY.pop(name, None)


def names() -> list[str]:
    with _LOCK:
        return list(_REGISTRY)


def get_dataset(name: str) -> DatasetSpec:
    with _LOCK:
        spec = _REGISTRY.get(name)
        known = ", ".join(_REGISTRY)
    if spec is None:
        raise ValueError(f"unknown dataset {name!r}; known: {known}")
    return spec


def find_dataset(name: str) -> DatasetSpec | None:
    with _LOCK:
        return _REGISTRY.get(name)


def image_size_of(name: str) -> int:
    """The image side of a registered data set, DEFAULT_IMAGE_SIZE for an unregistered name."""
    spec = find_dataset(name)
    return spec.image_size if spec is not None else DEFAULT_IMAGE_SIZE


def class_colours(n: int, dataset: str | None = None) -> tuple[str, ...]:
    """Display colours of n classes: the data set's own when it has n classes, else palette(n)."""
    spec = find_dataset(dataset) if dataset else None
    return spec.colours if spec is not None and spec.num_classes == n else palette(n)


CIFAR10 = register_dataset(DatasetSpec(
    "cifar10", "CIFAR-10",
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    image_size=32, mean=(0.4914, 0.4822, 0.4465), torchvision_dir="cifar-10-batches-py",
    samples=r"foolbox:^cifar10_(\d+)_(\d)\.png$"))

# The 100 fine labels in label order (alphabetical, as torchvision's CIFAR100.classes lists them).
CIFAR100 = register_dataset(DatasetSpec(
    "cifar100", "CIFAR-100", tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can
castle caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin
elephant flatfish forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard
lobster man maple_tree motorcycle mountain mouse mushroom oak_tree orange orchid otter palm_tree pear
pickup_truck pine_tree plain plate poppy porcupine possum rabbit raccoon ray road rocket rose sea seal
shark shrew skunk skyscraper snail snake spider squirrel streetcar sunflower sweet_pepper table tank
telephone television tiger tractor train trout tulip turtle wardrobe whale willow_tree wolf woman worm
""".split()), image_size=32, mean=(0.5071, 0.4865, 0.4409), torchvision_dir="cifar-100-python",
    samples=r"foolbox:^cifar100_(\d+)_(\d+)\.png$"))  # the 20 CIFAR-100 test images foolbox ships (fine labels)

# ImageNet-1k (ILSVRC 2012): the 1000 class names in label order (the order torchvision's and timm's
# classifiers use), from imagenet_classes.txt beside this module; the 20 validation images that the
# foolbox package ships are the offline samples; images are shown at 224 px, the models' input side.
IMAGENET = register_dataset(DatasetSpec(
    "imagenet", "ImageNet-1k",
    tuple((Path(__file__).with_name("imagenet_classes.txt")).read_text().splitlines()),
    image_size=224, mean=(0.485, 0.456, 0.406), samples=r"foolbox:^imagenet_(\d+)_(\d+)\.jpg$"))
