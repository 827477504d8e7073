"""CIFAR-100: the 100 fine labels in label order (alphabetical, as torchvision's CIFAR100.classes lists
them); the 20 CIFAR-100 test images foolbox ships are the offline samples (fine labels)."""
from __future__ import annotations

from backend.core.datasets import DatasetSpec, register_dataset

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
    torchvision_class="CIFAR100", samples=r"foolbox:^cifar100_(\d+)_(\d+)\.png$", order=20))
