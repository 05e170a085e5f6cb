"""engine.modalities.text.catalog imports the text encoders' packages by name (`importlib.import_module`),
which PyInstaller cannot see; collect every installed one with its Hugging Face folder (config.json,
model.safetensors, tokenizer.json, ...), so the frozen app trains text classifiers offline."""
import importlib.util

from PyInstaller.utils.hooks import collect_data_files

from engine.modalities.text.catalog import TEXT_ENCODERS

hiddenimports = [spec.package for spec in TEXT_ENCODERS if importlib.util.find_spec(spec.package)]
datas = [entry for package in hiddenimports for entry in collect_data_files(package, include_py_files=False)]
