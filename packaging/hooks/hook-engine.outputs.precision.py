"""engine.outputs.precision uses onnxruntime.quantization (int8) and onnxruntime.transformers.float16 (fp16).
onnxruntime.transformers puts its own folder on sys.path and imports its modules by bare name
(`from fusion_utils import ...`, even from onnxruntime.quantization.shape_inference), which the frozen
app's archive cannot answer ("No module named 'fusion_utils'"): its .py files go beside it as data, where
that sys.path entry points, and the two packages are collected whole."""
from PyInstaller.utils.hooks import collect_data_files, collect_submodules

hiddenimports = collect_submodules("onnxruntime.quantization") + ["onnxruntime.transformers.float16"]
datas = collect_data_files("onnxruntime", subdir="transformers", include_py_files=True)
