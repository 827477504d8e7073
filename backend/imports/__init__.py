"""Import a published or a user's model as a RobustLens checkpoint: `python -m backend.imports SOURCE ...`.

Sources (backend.imports.sources): RobustBench's zoo (`robustbench NAME --dataset D --threat-model T`,
through robustbench's own load_model: it downloads when online and reads a file already in its model
folder without downloading), torchvision and timm classifiers by name (random weights unless
`--pretrained`), a user's weights file for one of our architectures (`file PATH --arch A`), and
user code the operator trusts (`entrypoint package.module:build`).

Every import writes a checkpoint folder like ours: safetensors weights (the loader never unpickles; a
.pt is read once, here, with torch.load(weights_only=True)), and a card with the architecture and its
arguments (rebuilt from backend.core.adapters at load time), the data set, input size,
normalisation (inside the model, so attacks work in [0, 1]) and provenance (source, name, version,
licence where known, sha256 of the file the weights came from). An imported folder holds a
.gitignore of "*": downloaded weights never get committed by accident.
"""
from backend.imports.sources import SOURCES, Imported, import_model

__all__ = ["SOURCES", "Imported", "import_model"]
