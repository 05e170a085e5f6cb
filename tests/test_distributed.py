"""torchrun with DistributedDataParallel: the sharding arithmetic, and real 2-process Gloo fits on this CPU."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine.training.distributed import DistributedContext, reassemble, shard_range

ROOT = Path(__file__).resolve().parent.parent


# -- the pure parts ------------------------------------------------------------------------------------
@pytest.mark.parametrize("count, world_size", [(24, 2), (10, 3), (7, 4), (2, 4), (0, 2), (1, 1)])
def test_shards_cover_every_item_once_in_order(count, world_size):
    shards = [shard_range(count, rank, world_size) for rank in range(world_size)]
    assert [i for shard in shards for i in shard] == list(range(count))
    sizes = [len(shard) for shard in shards]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_reassembled_pieces_are_the_items_in_their_first_order():
    """Each rank's slice, padded to the longest for the collective, comes back as the single-process rows."""
    items = torch.arange(2 * 10 * 3, dtype=torch.float32).reshape(2, 10, 3)      # [views, N, features]
    shards = [shard_range(10, rank, 3) for rank in range(3)]
    longest = max(len(s) for s in shards)
    pieces = []
    for shard in shards:
        piece = torch.full((2, longest, 3), -1.0)
        piece[:, :len(shard)] = items[:, shard.start:shard.stop]
        pieces.append(piece)
    assert torch.equal(reassemble(pieces, [len(s) for s in shards], dim=1), items)


def test_context_comes_from_torchrun_variables_only():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    context = DistributedContext.from_env(env, uses_cuda=False)
    assert (context.rank, context.world_size, context.local_rank, context.is_main, context.backend) == \
        (1, 2, 1, False, "gloo")
    assert DistributedContext.from_env({}, uses_cuda=False) is None                       # a plain run
    assert DistributedContext.from_env({**env, "WORLD_SIZE": "1", "RANK": "0"}, uses_cuda=False) is None


# -- real processes ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_train(data: Path, out: Path, tmp: Path, *options) -> subprocess.CompletedProcess:
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()),
               str(ROOT / "main.py"), "train", str(data), "--out", str(out), "--epochs", "2",
               "--image-size", "64", "--batch-size", "8", "--lr", "0.01", *map(str, options)]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)


def single_process_accuracy(data: Path, out: Path, *options) -> dict:
    done = subprocess.run([sys.executable, str(ROOT / "main.py"), "train", str(data), "--out", str(out),
                           "--epochs", "2", "--image-size", "64", "--batch-size", "8", "--lr", "0.01",
                           *map(str, options)], cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("options", [
    pytest.param([], id="cached-features"),
    pytest.param(["--cache", "off", "--freeze", "all-but-last-1"], id="images-last-block", marks=pytest.mark.slow),
])
def test_two_processes_train_one_run_folder(colour_dataset, tmp_path, options):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "run"
    done = torchrun_train(colour_dataset, out, scratch, *options)
    assert done.returncode == 0, done.stderr[-3000:]

    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1                                   # only process 0 prints
    summary = json.loads(summaries[0])
    assert summary["status"] == "completed"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["model.safetensors", "metrics.json", "predictions.json", "history.json", "config.json",
         "dataset_report.txt", "status.json"])                     # complete, no state left, no temp files
    assert json.loads((out / "status.json").read_text())["status"] == "completed"
    history = json.loads((out / "history.json").read_text())
    assert [logs["epoch"] for logs in history] == [1, 2]
    assert "distributed: 2 processes (gloo)" in done.stderr
    assert done.stderr.count("Evaluating") <= 1                  # progress from process 0 only
    assert not list(scratch.glob("transferlab-*"))               # the other process's scratch folder is gone

    metrics = json.loads((out / "metrics.json").read_text())
    alone = single_process_accuracy(colour_dataset, tmp_path / "alone", *options)
    for split in ("val", "test"):          # 3 images each: one image is 0.33
        assert metrics[f"{split}_accuracy"] >= 0.66
        assert metrics[f"{split}_accuracy"] == pytest.approx(alone[f"{split}_accuracy"], abs=0.34)


def test_options_that_run_in_one_process_are_refused_once(colour_dataset, tmp_path):
    done = torchrun_train(colour_dataset, tmp_path / "run", tmp_path, "--auto")
    assert done.returncode != 0
    assert done.stderr.count("error: --auto runs in one process") == 1


RUN_FILES = ["model.safetensors", "metrics.json", "predictions.json", "history.json", "config.json",
             "dataset_report.txt", "status.json"]


@pytest.mark.skipif(not Path("/usr/share/games/fortunes/computers").is_file(),
                    reason="Debian's fortunes package is not installed")
def test_two_processes_train_texts_into_one_run_folder(tmp_path):
    """Texts under torchrun: the last encoder layer on cached hidden states, in DistributedDataParallel;
    the run folder is a one-process text run's (texts beside their predictions)."""
    from test_text import write_fortunes_csv
    texts = write_fortunes_csv(tmp_path / "fortunes.csv", per_class=12)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    out = tmp_path / "run"
    done = torchrun_train(texts, out, scratch, "--epochs", "1", "--freeze", "all-but-last-1", "--max-tokens", "32",
                          "--lr", "0.001")
    assert done.returncode == 0, done.stderr[-3000:]

    summaries = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert len(summaries) == 1 and json.loads(summaries[0])["status"] == "completed"
    assert sorted(p.name for p in out.iterdir()) == sorted(RUN_FILES)
    assert "distributed: 2 processes (gloo)" in done.stderr
    assert "training on cached hidden states" in done.stderr
    assert not list(scratch.glob("transferlab-*"))
    assert [logs["epoch"] for logs in json.loads((out / "history.json").read_text())] == [1]
    predictions = json.loads((out / "predictions.json").read_text())
    assert predictions["test"] and all(row["text"] for row in predictions["test"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["backbone"] == "all-minilm-l6-v2" and metrics["test_accuracy"] is not None
