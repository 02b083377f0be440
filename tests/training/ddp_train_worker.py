"""Run by test_training_ddp.py under ``torchrun --nproc-per-node 2``: a few DDP steps of the tiny trainer.

Each rank writes its final raw weights to OUT/rank<r>.pt so the test can compare the ranks with each other and
with a one-process run of the same global batch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, where helpers.py lives

from helpers import tiny_trainer  # noqa: E402

out = Path(sys.argv[1])
trainer = tiny_trainer(out / "run", max_steps=3, batch_size=4, adam_eps=1.0, use_ema=True)
trainer.train()
rank = int(os.environ["RANK"])
torch.save({k: v.detach().clone() for k, v in trainer.unet.state_dict().items()}, out / f"rank{rank}.pt")
