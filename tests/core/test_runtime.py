"""ddpm.runtime: the one device, dtype and torchrun resolver that the commands, the models and the trainer share."""

from __future__ import annotations

import pytest
import torch

from ddpm.models.modeling import resolve_dtype as modeling_resolve_dtype
from ddpm.runtime import DTYPES, Distributed, env_int, resolve_device, resolve_dtype


def test_resolve_dtype_reads_command_line_names_torch_names_and_dtypes():
    assert modeling_resolve_dtype is resolve_dtype  # the models' torch_dtype= goes through the same function
    for name, dtype in DTYPES.items():
        assert resolve_dtype(name) is dtype
    assert resolve_dtype("float16") is torch.float16 and resolve_dtype("torch.bfloat16") is torch.bfloat16
    assert resolve_dtype("half") is torch.float16 and resolve_dtype(torch.float32) is torch.float32
    assert resolve_dtype(None) is None
    for bad in ("int8", "fp8", "bogus"):
        with pytest.raises(ValueError, match=f"torch_dtype='{bad}'"):
            resolve_dtype(bad)


def test_resolve_device_auto_cpu_and_bad_names():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected and resolve_device(None).type == expected
    assert resolve_device("cpu") == torch.device("cpu") == resolve_device(torch.device("cpu"))
    with pytest.raises(ValueError, match="'bogus'"):
        resolve_device("bogus")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_resolve_device_cuda_without_cuda_says_so():
    for name in ("cuda", "cuda:1"):
        with pytest.raises(ValueError, match="no CUDA device"):
            resolve_device(name)


def test_a_lone_process_joins_no_group_and_its_collectives_return_their_input(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist = Distributed()
    assert (dist.rank, dist.world_size, dist.local_rank, dist.enabled, dist.is_main) == (0, 1, 0, False, True)
    with dist.joined(torch.device("cpu")) as joined:
        assert joined is dist and not torch.distributed.is_initialized()
        assert dist.all_sum([3, 4]) == [3, 4]
        values = torch.tensor([1.5, 2.0])
        assert dist.all_reduce_sum(values) is values
        dist.barrier()


def test_torchrun_variables_are_read_and_bad_ones_named(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    dist = Distributed()
    assert (dist.rank, dist.world_size, dist.local_rank, dist.enabled, dist.is_main) == (3, 4, 3, True, False)
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        Distributed()
    assert env_int("DDPM_TEST_UNSET_VARIABLE", 7) == 7
