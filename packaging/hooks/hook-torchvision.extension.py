"""torchvision 0.29 loads its C++ operators (`nms`, `roi_align`, image decoding) with
`torch.ops.load_library("_C_stable")` and `"image_stable"`: not an import, so neither PyInstaller nor
the contributed torchvision hooks see them, and the frozen app fails with
`operator torchvision::nms does not exist`. Collect them into `torchvision/`, where
`torchvision.extension` looks."""
from PyInstaller.utils.hooks import collect_dynamic_libs

binaries = collect_dynamic_libs("torchvision", search_patterns=["*_stable.so", "*_stable.pyd"])
