"""The device names `--device` and TrainConfig.device accept, in one torch-free place: the config checks them
without importing torch, engine.core.device (which needs torch) says which ones exist."""
from __future__ import annotations

import re

DEVICE_NAMES = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
