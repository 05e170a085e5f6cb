"""engine.models.catalog imports the weights packages of its catalog by name (`importlib.import_module`), which
PyInstaller cannot see; collect every installed one together with its weights file (`models/*.pth`),
so the frozen app trains from the real ImageNet weights offline."""
import importlib.util

from PyInstaller.utils.hooks import collect_data_files

from engine.models.catalog import CATALOG

hiddenimports = [spec.weights_package for spec in CATALOG
                 if spec.weights_package and importlib.util.find_spec(spec.weights_package)]
datas = [entry for package in hiddenimports for entry in collect_data_files(package)]
