"""CIFAR-10: ten classes of 32 px photos; the 20 test images the foolbox package ships are the offline samples."""
from __future__ import annotations

from backend.core.datasets import DatasetSpec, register_dataset

CIFAR10 = register_dataset(DatasetSpec(
    "cifar10", "CIFAR-10",
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    image_size=32, mean=(0.4914, 0.4822, 0.4465), torchvision_dir="cifar-10-batches-py",
    torchvision_class="CIFAR10", samples=r"foolbox:^cifar10_(\d+)_(\d)\.png$", order=10))
