"""What the rest of the code needs to know about the architectures without building one (no torch):
importable by the torch-free training config and job runner.

WIDTHS is the one list of ResNet-18 base channel counts; backend.core.models reads it from here.
"""
from __future__ import annotations

WIDTHS: tuple[int, ...] = (16, 32, 64)  # ResNet-18 base channels; 64 is the paper's network

# the architectures the Train page offers and the test suite trains with every method (ArchSpec.trainable;
# tests/test_train_archs.py keeps the two lists equal). The trainer's --arch takes any registered one.
TRAINABLE: tuple[str, ...] = ("resnet18", "fastnet")
