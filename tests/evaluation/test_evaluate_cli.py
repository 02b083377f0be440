"""``ddpm evaluate``'s arguments (issues 13/14): counts are bounded, and the messages name what the command has."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from ddpm.cli import main


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--limit", "0"], "--limit: must be at least 1, got 0"),
        (["--draws", "0"], "--draws: must be at least 1, got 0"),
        (["--k", "0"], "--k: must be at least 1, got 0"),
        (["--k", "-1"], "--k: must be at least 1, got -1"),
        (["--seed", str(2**64)], "--seed: must be from 0 to 2**63-1"),
    ],
)
def test_counts_out_of_range_are_usage_errors(tmp_path: Path, capsys, argv: list[str], says: str) -> None:
    with pytest.raises(SystemExit) as info:
        main(["evaluate", str(tmp_path), *argv])
    assert info.value.code == 2 and says in capsys.readouterr().err


def test_a_missing_folder_is_named_without_options_evaluate_lacks(tmp_path: Path, capsys) -> None:
    assert main(["evaluate", str(tmp_path / "missing_dir")]) == 1
    err = capsys.readouterr().err
    assert err == f"ddpm evaluate: error: {tmp_path / 'missing_dir'}: no such folder (expected a folder of images)\n"
    assert "--data" not in err


def test_k_must_be_below_the_number_of_images(tmp_path: Path, capsys) -> None:
    g = torch.Generator().manual_seed(0)
    for i in range(3):
        Image.fromarray(torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=g).numpy()).save(
            tmp_path / f"{i}.png"
        )
    assert main(["evaluate", str(tmp_path), "--k", "3"]) == 1
    assert capsys.readouterr().err == (
        f"ddpm evaluate: error: --k 3 needs more than 3 images; {tmp_path} gives 3: lower --k or add images\n"
    )


def test_k_of_one_is_counted_in_the_singular(tmp_path: Path, capsys) -> None:
    Image.fromarray(torch.zeros(32, 32, dtype=torch.uint8).numpy()).save(tmp_path / "0.png")
    assert main(["evaluate", str(tmp_path), "--k", "1"]) == 1
    assert "--k 1 needs more than 1 image; " in capsys.readouterr().err
