"""engine.core.modality finds the built-in modalities by name (`importlib.import_module` of the strings in
its `_BUILT_IN` table), which PyInstaller cannot see: without them the frozen app knows no images or texts
("No module named 'engine.modalities.image'"). Collect each modality package and everything under it."""
from PyInstaller.utils.hooks import collect_submodules

from engine.core.modality import _BUILT_IN

hiddenimports = sorted({name for spec in _BUILT_IN.values() for name in collect_submodules(spec.split(":")[0])})
