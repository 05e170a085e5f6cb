"""CPU flavour: let torchvision import when its compiled operators cannot load.

The only torchvision for torch 2.13.0+cpu on this machine's index is PyPI's 0.28.0, a CUDA build: its
`_C.so` needs `libtorch_cuda.so` and `libc10_cuda.so` (see `ldd`), so with a CPU torch
`torchvision.extension` catches the OSError and carries on without its operators (`_has_ops()` is False,
as upstream intends), but `torchvision._meta_registrations` then calls
`torch.library.register_fake("torchvision::nms")` (and `qnms`) unconditionally, and `import torchvision`
fails with `RuntimeError: operator torchvision::nms does not exist`.

TransferLab uses only `torchvision.transforms.v2` (pure Python); the operators (nms, roi_align, deform
conv, image decoding) are never called. So, at the moment torchvision imports `_meta_registrations` and
only when its extension did not load, this declares the schemas of those two operators (the ones in
torchvision's C++ sources), with no kernel: the fake registrations succeed, and a call of
`torchvision.ops.nms` still fails with torchvision's own "Couldn't load custom C++ ops" (`_assert_has_ops`).
Nothing happens when the extension loads (a matching torchvision), and nothing is imported before the
app imports torchvision, so start-up is not slowed.

Used twice, the same file: as a PyInstaller runtime hook of the CPU flavour (build.spec), and in the CPU
build venv as `_tl_torchvision_cpu_ops.py` imported by a `.pth` file (scripts/build.sh), so that the
build's analysis, and the app run from source in that venv, import torchvision too.
"""
import sys

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)


class _DeclareTorchvisionOps:
    """A meta path finder that finds nothing: it only acts when torchvision._meta_registrations is looked up."""

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision._meta_registrations":
            sys.meta_path.remove(self)
            extension = sys.modules.get("torchvision.extension")   # imported by torchvision just before
            if extension is not None and not extension._has_ops():
                import torch

                library = torch.library.Library("torchvision", "FRAGMENT")
                for schema in _SCHEMAS:
                    library.define(schema)
                extension._transferlab_cpu_ops = library   # a Library undoes its definitions when collected
        return None

    def invalidate_caches(self):
        pass


if not any(type(finder).__name__ == "_DeclareTorchvisionOps" for finder in sys.meta_path):
    sys.meta_path.insert(0, _DeclareTorchvisionOps())
