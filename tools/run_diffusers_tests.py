"""Run diffusers' own tests for the classes ddpm replaces, against ddpm, with only the import changed.

Not part of CI (it needs a diffusers checkout and diffusers installed as the oracle). Usage::

    python tools/run_diffusers_tests.py /path/to/diffusers            # a git checkout (its tests/ folder is used)
    python tools/run_diffusers_tests.py /path/to/diffusers --only ddpm  # skip the baseline run

The test files need a few packages diffusers' test suite imports (not ddpm's dependencies)::

    pip install accelerate transformers peft parameterized requests_mock

The script copies the checkout's ``tests/`` into a temporary folder and runs the selected test files twice with
pytest, offline (``HF_HUB_OFFLINE=1``): once as they are (the baseline: what diffusers itself passes here), once
with a pytest plugin that makes ``diffusers.<Name>`` resolve to ``ddpm.<Name>`` for the swapped classes (what a
porting user does by changing the import). It then prints, for every test the baseline passes, whether ddpm
passes it, and classifies each failure as *internal* (tests a private name of diffusers, listed in
``INTERNAL``), *deviation* (a documented, deliberate difference, listed in ``DEVIATIONS``) or *public* (a bug in
ddpm's compatibility). The score the issue asks for is passed / (baseline passed - internal).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

# The files that test the classes ddpm replaces.
TEST_FILES = (
    "tests/schedulers/test_scheduler_ddpm.py",
    "tests/schedulers/test_scheduler_ddim.py",
    "tests/schedulers/test_scheduler_pndm.py",
    "tests/schedulers/test_schedulers.py",
    "tests/models/unets/test_models_unet_2d.py",
    "tests/pipelines/ddpm/test_ddpm.py",
    "tests/pipelines/ddim/test_ddim.py",
    "tests/pipelines/pndm/test_pndm.py",
)

# The names a porting user imports from ddpm instead of diffusers.
SWAPPED = (
    "DDPMScheduler",
    "DDIMScheduler",
    "PNDMScheduler",
    "UNet2DModel",
    "DDPMPipeline",
    "DDIMPipeline",
    "PNDMPipeline",
    "DiffusionPipeline",
)

# Tests of diffusers' private internals (out of scope): test id substring -> reason.
INTERNAL: dict[str, str] = {
    "PipelineFastTests::test_save_load_local": (
        "asserts that diffusers' own logger 'diffusers.pipelines.pipeline_utils' records each component it loads; "
        "ddpm logs to its own loggers (the images before saving and after reloading are equal: "
        "tests/compat/test_pipeline_compat.py)"
    ),
    "SchedulerTest::test_deprecated_kwargs": "reads the private class attribute _deprecated_kwargs",
    "DDPMSchedulerTest::test_variance": "calls the private _get_variance",
    "DDIMSchedulerTest::test_variance": "calls the private _get_variance",
    "PNDMSchedulerTest::test_full_loop_": "drives PNDM through prk_timesteps / step_prk / step_plms",
    "PNDMSchedulerTest::test_inference_plms_no_past_residuals": "calls PNDM's step_plms",
    "PNDMSchedulerTest::test_inference_steps": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_pow_of_3_inference_steps": "calls PNDM's prk_timesteps / step_prk",
    "PNDMSchedulerTest::test_prediction_type": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_schedules": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_step_shape": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_steps_offset": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_time_indices": "calls PNDM's step_prk / step_plms",
    "PNDMSchedulerTest::test_timesteps": "calls PNDM's step_prk / step_plms",
    # UNet2DModel (tests/models/unets/test_models_unet_2d.py); diffusers skips these on CPU, ddpm fails them.
    "test_keep_in_fp32_modules": "reads ModelMixin._keep_in_fp32_modules, a private per-class attribute",
    "test_to_keep_in_fp32_modules_warns": "reads ModelMixin._keep_in_fp32_modules, a private per-class attribute",
}

# Deliberate, documented deviations (docs/compatibility.md): test id substring -> reason.
DEVIATIONS: dict[str, str] = {
    "::test_from_save_pretrained_variant": (
        "asserts diffusers' wording of the missing-weights error; ddpm raises the same OSError in its own words, "
        "listing the weights files present and the variant to pass"
    ),
    "::test_loading_with_incorrect_variants_raises_error": (
        "asserts diffusers' wording; ddpm raises a ValueError (VariantNotFoundError) in its own words, listing the "
        "weights files present"
    ),
    "SchedulerTest::test_betas": "beta_end=2 is refused (ConfigError: a beta must be in (0, 1)); diffusers builds NaN",
    "SchedulerTest::test_trained_betas": "trained_betas of 2 values with num_train_timesteps=1000 is refused",
    "DDPMSchedulerTest::test_variance_type": "variance_type='other' is refused (ConfigError names the allowed values)",
}

PLUGIN = '''
"""pytest plugin: make diffusers.<Name> resolve to ddpm.<Name> for the swapped classes."""
import diffusers
import diffusers.models
import diffusers.pipelines
import diffusers.schedulers
import ddpm

SWAPPED = {swapped!r}

for _name in SWAPPED:
    _obj = getattr(ddpm, _name)
    for _module in (diffusers, diffusers.schedulers, diffusers.models, diffusers.pipelines):
        setattr(_module, _name, _obj)
'''


def run_pytest(tests_root: Path, files: list[str], junit: Path, swap: bool, extra: list[str]) -> None:
    """Run pytest on ``files`` under ``tests_root`` (optionally with the swap plugin), writing a JUnit report."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONHASHSEED="0")
    plugin_args: list[str] = []
    if swap:
        plugin_dir = tests_root / "_ddpm_swap"
        plugin_dir.mkdir(exist_ok=True)
        (plugin_dir / "ddpm_swap_plugin.py").write_text(PLUGIN.format(swapped=SWAPPED))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(plugin_dir), env.get("PYTHONPATH", "")]))
        plugin_args = ["-p", "ddpm_swap_plugin"]
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--continue-on-collection-errors",
        *plugin_args,
        f"--junitxml={junit}",
        "-o",
        "junit_family=xunit1",
        *extra,
        *files,
    ]
    subprocess.run(cmd, cwd=tests_root, env=env, check=False)


def outcomes(junit: Path) -> dict[str, str]:
    """Test id -> 'passed' | 'failed' | 'skipped' from a JUnit report (message kept for failures)."""
    result: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        test_id = f"{case.get('classname')}::{case.get('name')}"
        state = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                state = "failed: " + (child.get("message") or "")[:300].replace("\n", " ")
            elif child.tag == "skipped":
                state = "skipped"
        result[test_id] = state
    return result


def _matches(test_id: str, key: str) -> bool:
    """``key`` is ``"<class substring>::<test name>"``; a name ending in ``_`` matches every test it prefixes."""
    class_key, _, name_key = key.rpartition("::")
    class_name, _, name = test_id.rpartition("::")
    name = name.split("[")[0]  # parametrized ids
    same_name = name == name_key or (name_key.endswith("_") and name.startswith(name_key))
    return class_key in class_name and same_name


def classify(test_id: str) -> str | None:
    """Return 'internal: why' / 'deviation: why' for a listed test, else None."""
    for table, label in ((INTERNAL, "internal"), (DEVIATIONS, "deviation")):
        for key, why in table.items():
            if _matches(test_id, key):
                return f"{label}: {why}"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a diffusers source checkout (the folder holding tests/)")
    parser.add_argument("--only", choices=("diffusers", "ddpm"), help="run just one side")
    parser.add_argument("--keep", type=Path, help="write the two JSON outcome files here")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    args = parser.parse_args()
    if not (args.checkout / "tests" / "schedulers").is_dir():
        parser.error(f"{args.checkout} has no tests/schedulers: pass the root of a diffusers checkout")
    extra = ["-k", args.keyword] if args.keyword else []
    with tempfile.TemporaryDirectory(prefix="ddpm-difftests-") as tmp:
        root = Path(tmp)
        shutil.copytree(args.checkout / "tests", root / "tests")
        files = [f for f in TEST_FILES if (root / f).is_file()]
        results: dict[str, dict[str, str]] = {}
        for side in ("diffusers", "ddpm"):
            if args.only and args.only != side:
                continue
            junit = root / f"{side}.xml"
            run_pytest(root, files, junit, swap=side == "ddpm", extra=extra)
            results[side] = outcomes(junit)
            if args.keep:
                args.keep.mkdir(parents=True, exist_ok=True)
                (args.keep / f"{side}.json").write_text(json.dumps(results[side], indent=1, sort_keys=True))
    if len(results) < 2:
        for side, res in results.items():
            n_pass = sum(v == "passed" for v in res.values())
            print(f"{side}: {n_pass} passed of {len(res)}")
        return 0
    base, ours = results["diffusers"], results["ddpm"]
    in_scope = passed = 0
    report: list[str] = []
    for test_id, state in sorted(base.items()):
        if state != "passed":
            continue
        if test_id.split("::")[0].endswith(".SchedulerCommonTest"):
            continue  # the abstract base class, collected once per module with no scheduler under test
        why = classify(test_id)
        if why and why.startswith("internal"):
            report.append(f"INTERNAL  {test_id}  ({why})")
            continue
        in_scope += 1
        got = ours.get(test_id, "missing")
        if got == "passed":
            passed += 1
        else:
            report.append(f"{'DEVIATION' if why else 'FAIL':9} {test_id}  {why or got}")
    print("\n".join(report))
    n_base = sum(v == "passed" for v in base.values())
    print(
        f"\ndiffusers passes {n_base} of {len(base)}; in scope (not internal): {in_scope}; "
        f"ddpm passes {passed} = {100.0 * passed / max(in_scope, 1):.1f} %"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
