"""`kernels` (Hugging Face's kernel hub client, which transformers imports) reads
kernels/_internals/python_depends.json at import time; PyInstaller leaves data files out unless told, and
the frozen app then cannot load a text encoder ("Cannot load dependency data, is `kernels` correctly
installed?")."""
from PyInstaller.utils.hooks import collect_data_files

datas = collect_data_files("kernels")
