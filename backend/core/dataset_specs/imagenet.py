"""ImageNet-1k (ILSVRC 2012): the 1000 class names in label order (the order torchvision's and timm's
classifiers use), from backend/core/imagenet_classes.txt; the 20 validation images that the foolbox
package ships are the offline samples; images are shown at 224 px, the models' input side. Class
folders may be named by WordNet id (backend/core/imagenet_wnids.txt, in the same label order: the
sorted synset ids, as ImageNet's val/ folder and Imagenette name them)."""
from __future__ import annotations

from pathlib import Path

from backend.core.datasets import DatasetSpec, register_dataset

CORE = Path(__file__).resolve().parent.parent  # the two lists are package data of backend.core

IMAGENET = register_dataset(DatasetSpec(
    "imagenet", "ImageNet-1k", tuple((CORE / "imagenet_classes.txt").read_text().splitlines()),
    image_size=224, mean=(0.485, 0.456, 0.406), samples=r"foolbox:^imagenet_(\d+)_(\d+)\.jpg$",
    folder_ids=tuple((CORE / "imagenet_wnids.txt").read_text().split()), order=30))
