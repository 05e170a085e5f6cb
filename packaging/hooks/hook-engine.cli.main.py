"""engine.cli.main registers the commands that live in their own modules (export, predict) by module name
(`__import__`), which PyInstaller cannot follow, and it skips a command whose module does not import:
collect every engine module so the frozen CLI never silently loses a command."""
from PyInstaller.utils.hooks import collect_submodules

hiddenimports = collect_submodules("engine")
