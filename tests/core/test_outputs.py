"""The output dataclasses answer by name and by position, like diffusers' BaseOutput, and stay frozen."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ddpm.outputs import BaseOutput, ImagePipelineOutput, SchedulerOutput, UNet2DOutput


@dataclasses.dataclass(frozen=True)
class _Partial(BaseOutput):
    first: torch.Tensor
    second: torch.Tensor | None = None


def test_by_name_and_by_position() -> None:
    prev, x0 = torch.zeros(1), torch.ones(1)
    out = SchedulerOutput(prev_sample=prev, pred_original_sample=x0)
    assert list(out.keys()) == ["prev_sample", "pred_original_sample"]
    assert list(out.values()) == [prev, x0] and list(out.items()) == [
        ("prev_sample", prev),
        ("pred_original_sample", x0),
    ]
    assert out["prev_sample"] is out[0] is out.prev_sample and out[-1] is x0 and out[:1] == (prev,)
    assert out.to_tuple() == (prev, x0) and len(out) == 2 and "pred_original_sample" in out and "x" not in out
    a, b = out  # iteration yields the values, as a tuple does
    assert a is prev and b is x0
    with pytest.raises(KeyError, match="no field 'sample' set"):
        out["sample"]
    with pytest.raises(IndexError):
        out[2]


def test_fields_that_are_none_are_left_out_as_in_diffusers() -> None:
    out = _Partial(first=torch.zeros(1))
    assert list(out.keys()) == ["first"] and out.to_tuple() == (out.first,) and len(out) == 1
    assert "second" not in out and out.second is None
    with pytest.raises(KeyError):
        out["second"]


def test_outputs_are_frozen_typed_dataclasses() -> None:
    out = UNet2DOutput(sample=torch.zeros(1))
    with pytest.raises(dataclasses.FrozenInstanceError):
        out.sample = torch.ones(1)  # type: ignore[misc]
    assert [f.name for f in dataclasses.fields(ImagePipelineOutput)] == ["images"]
    assert ImagePipelineOutput(images=[1, 2])["images"] == [1, 2]
