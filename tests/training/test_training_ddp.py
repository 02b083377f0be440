"""Distributed training: two CPU processes under torchrun (gloo) train exactly like one with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from helpers import tiny_trainer

WORKER = Path(__file__).with_name("ddp_train_worker.py")


def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(WORKER),
        str(tmp_path),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name in rank0:
        torch.testing.assert_close(rank0[name], rank1[name], rtol=0, atol=0, msg=f"ranks differ in {name}")

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = tiny_trainer(tmp_path / "single", max_steps=3, batch_size=4, adam_eps=1.0)
        single.train()
    finally:
        torch.set_num_threads(threads)
    for name, value in single.unet.state_dict().items():
        message = f"DDP differs from 1 process in {name}"
        torch.testing.assert_close(rank0[name], value, atol=1e-6, rtol=1e-5, msg=message)

    # Only rank 0 saved: one checkpoint recording both processes, one pipeline folder.
    checkpoint = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 3
    assert (tmp_path / "run" / "unet" / "diffusion_pytorch_model.safetensors").is_file()
