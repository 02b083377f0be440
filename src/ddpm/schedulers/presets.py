"""Named samplers: a scheduler class of :data:`~ddpm.schedulers.SCHEDULERS`, its config overrides and a step count.

``ddpm sample --scheduler NAME``, the editing commands and ``benchmarks/sample_quality.py`` read this one table, so a
sampler is defined once. A preset builds its scheduler from the model's own scheduler config, the diffusers swap::

    pipe = DDPMPipeline.from_pretrained("ddpm-mnist")
    pipe.scheduler = SAMPLER_PRESETS["dpm++2m"].build(pipe.scheduler.config)
    # = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++", solver_order=2)

so the noise schedule (β_t, prediction type, ...) stays the model's and only the sampler changes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .base import Scheduler

__all__ = ["SAMPLER_PRESETS", "SamplerPreset", "sampler_preset"]


@dataclasses.dataclass(frozen=True)
class SamplerPreset:
    """One named sampler.

    Attributes:
        name: The ``--scheduler`` name (``"dpm++2m"``).
        scheduler: Its class's key in :data:`~ddpm.schedulers.SCHEDULERS` (``"dpmsolver"``).
        overrides: Config keys set on top of the model's scheduler config.
        default_steps: The step count when none is given (``num_inference_steps``; Heun and PNDM call the model
            more often than that, see :meth:`Scheduler.set_timesteps`).
        description: One line for ``ddpm info`` and the help.
    """

    name: str
    scheduler: str
    overrides: Mapping[str, Any]
    default_steps: int
    description: str

    def scheduler_class(self) -> type[Scheduler]:
        """The scheduler class of this preset.

        Raises:
            NotImplementedError: This installation's ``SCHEDULERS`` has no class under :attr:`scheduler`.
        """
        from . import SCHEDULERS

        cls = SCHEDULERS.get(self.scheduler)
        if cls is None:
            raise NotImplementedError(
                f"sampler {self.name!r} needs the scheduler {self.scheduler!r}, which is not in ddpm.schedulers."
                f"SCHEDULERS ({', '.join(SCHEDULERS)}); this installation of ddpm is incomplete: reinstall it"
            )
        return cls

    @property
    def takes_eta(self) -> bool:
        """Whether the sampler has DDIM's η (``--eta``): only a scheduler constructed with an ``eta``."""
        return "eta" in self.scheduler_class()._constructor_only

    def build(self, config: Any) -> Scheduler:
        """This sampler on ``config``'s noise schedule: ``Cls.from_config(config, **overrides)``."""
        return self.scheduler_class().from_config(config, **self.overrides)


def _preset(name: str, scheduler: str, default_steps: int, description: str, **overrides: Any) -> SamplerPreset:
    return SamplerPreset(name, scheduler, MappingProxyType(overrides), default_steps, description)


#: ``--scheduler`` name -> preset, in the order ``ddpm info`` lists them.
SAMPLER_PRESETS: Mapping[str, SamplerPreset] = MappingProxyType(
    {
        p.name: p
        for p in (
            _preset("ddpm", "ddpm", 1000, "ancestral sampling of Ho et al. 2020, one call per training step"),
            _preset("ddim", "ddim", 50, "DDIM (Song et al. 2021), deterministic at eta 0; --eta adds noise"),
            _preset("pndm", "pndm", 50, "PNDM (Liu et al. 2022), Runge-Kutta warm-up: steps + 9 calls"),
            _preset(
                "dpm++2m",
                "dpmsolver",
                20,
                "DPM-Solver++ (Lu et al. 2022), 2nd-order multistep, deterministic",
                algorithm_type="dpmsolver++",
                solver_order=2,
            ),
            _preset(
                "dpm++3m",
                "dpmsolver",
                10,  # on the bundled model, 10 calls beat DDIM-50 (docs/schedulers.md)
                "DPM-Solver++, 3rd-order multistep, deterministic",
                algorithm_type="dpmsolver++",
                solver_order=3,
            ),
            _preset(
                "dpm++2m-sde",
                "dpmsolver",
                20,
                "SDE DPM-Solver++, 2nd-order multistep, stochastic",
                algorithm_type="sde-dpmsolver++",
                solver_order=2,
            ),
            _preset("unipc", "unipc", 20, "UniPC (Zhao et al. 2023), bh2 predictor-corrector, deterministic"),
            _preset("euler", "euler", 30, "Euler in sigma-space (Karras et al. 2022), deterministic"),
            _preset("euler-a", "euler-a", 30, "Euler ancestral in sigma-space, stochastic"),
            _preset("heun", "heun", 20, "Heun (Karras et al. 2022 Alg. 1): 2 calls per step, 2n - 1 in all"),
        )
    }
)


def sampler_preset(name: str) -> SamplerPreset:
    """The preset called ``name``.

    Raises:
        ValueError: No sampler has that name; the message lists the names.
    """
    preset = SAMPLER_PRESETS.get(name)
    if preset is None:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(SAMPLER_PRESETS)}")
    return preset
