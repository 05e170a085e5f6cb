"""onnxscript compiles its torch_lib operators from their Python source (`@onnxscript.script` calls
`inspect.getsource`), so the frozen app needs the .py files beside the bytecode. Without them the ONNX
exporter fails frozen with "Decorator script does not work on dynamically compiled function"."""
module_collection_mode = "pyz+py"
