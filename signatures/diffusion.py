"""Diffusion sampling schedule under a latency budget: which sampler, how many steps.

Quality model: FID on CIFAR-10 (32x32) as a function of the number of sampling steps, from
published tables on the DDPM CIFAR-10 model family:

* DDIM, Song et al. 2021 ("Denoising Diffusion Implicit Models"), Table 1, CIFAR-10 at
  S = 10/20/50/100/1000 steps: eta = 0 (DDIM) 13.36 / 6.84 / 4.67 / 4.16 / 4.04;
  eta = 1 (the DDPM ancestral sampler) 41.07 / 18.36 / 8.01 / 5.78 / 4.73, and with the larger
  variance sigma-hat 3.17 at 1000 steps (the DDPM paper's own result, Ho et al. 2020).
* DPM-Solver, Lu et al. 2022, abstract: 4.70 FID at 10 and 2.87 FID at 20 function evaluations on
  CIFAR-10. No further gain is assumed beyond 20 steps (none is claimed there).

Between published points, log FID is interpolated linearly in log steps. Below 10 steps (outside
every table) the 10-step FID is scaled by (10/steps)^1.5, a deliberately pessimistic
extrapolation. Above the model's T = 1000 training steps nothing improves.

Latency model: one step is one network evaluation, so latency = steps x per-step latency
(all three samplers call the denoiser once per step; DPM-Solver's count is in function
evaluations already).
"""

from __future__ import annotations

import math
from typing import Literal

import dspy

from signatures._common import choice, field, integer, result, seeded_splits

SAMPLERS = ("ddpm", "ddim", "dpm_solver")
T_MAX = 1000
MIN_PUBLISHED_STEPS = 10
FID_TABLE = {
    "ddpm": {10: 41.07, 20: 18.36, 50: 8.01, 100: 5.78, 1000: 3.17},
    "ddim": {10: 13.36, 20: 6.84, 50: 4.67, 100: 4.16, 1000: 4.04},
    "dpm_solver": {10: 4.70, 20: 2.87, 1000: 2.87},
}
SAMPLER_ALIASES = {"dpm": "dpm_solver", "dpmsolver": "dpm_solver", "dpm_solver_2": "dpm_solver",
                   "dpm_solver_3": "dpm_solver", "dpm_solver_fast": "dpm_solver", "ancestral": "ddpm"}
STEP_LATENCY_MS = (8, 12, 20, 35, 50, 80)       # per denoiser call, fast GPU to slow CPU-ish
BUDGET_STEPS = (10, 12, 15, 18, 25, 40, 60, 120, 300)


class ChooseDiffusionSampler(dspy.Signature):
    """Pick a diffusion sampler and number of steps that give the best image quality (lowest FID) within the latency budget."""

    latency_budget_ms: int = dspy.InputField(desc="maximum time to generate one image, in milliseconds")
    step_latency_ms: int = dspy.InputField(desc="time of one denoising step, in milliseconds")
    sampler: Literal["ddpm", "ddim", "dpm_solver"] = dspy.OutputField(
        desc="sampler: ddpm (slow, many steps), ddim, or dpm_solver (best at few steps)")
    num_steps: int = dspy.OutputField(desc="number of sampling steps; steps x step latency must fit the budget")


def fid(sampler: str, steps: int) -> float:
    """FID for `sampler` at `steps` from the published table (see module docstring)."""
    table = FID_TABLE[sampler]
    points = sorted(table)
    steps = min(int(steps), T_MAX)
    if steps in table:
        return table[steps]
    if steps < points[0]:
        return table[points[0]] * (points[0] / max(steps, 1)) ** 1.5
    for lo, hi in zip(points, points[1:]):
        if lo <= steps <= hi:
            t = (math.log(steps) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return math.exp((1 - t) * math.log(table[lo]) + t * math.log(table[hi]))
    return table[points[-1]]


def latency_ms(steps: int, step_latency_ms: float) -> float:
    return steps * step_latency_ms


def reference(latency_budget_ms: int, step_latency_ms: int) -> dict:
    """Exhaustive search: the lowest-FID (sampler, steps) within budget, steps within the published
    range (>= 10); ties go to fewer steps (lower latency)."""
    max_steps = min(T_MAX, latency_budget_ms // step_latency_ms)
    best = None
    for sampler in SAMPLERS:
        for steps in range(MIN_PUBLISHED_STEPS, max_steps + 1):
            key = (round(fid(sampler, steps), 6), steps)
            if best is None or key < best[0]:
                best = (key, {"sampler": sampler, "num_steps": steps})
    return best[1]


def make_scenario(rng) -> dict:
    """A per-step latency and a budget allowing 10..300 steps (so the published range is reachable)."""
    step = rng.choice(STEP_LATENCY_MS)
    budget = step * rng.choice(BUDGET_STEPS) + rng.choice((0, step // 2))
    return {"latency_budget_ms": budget, "step_latency_ms": step}


def to_example(scenario: dict):
    return dspy.Example(**scenario, **reference(**scenario)).with_inputs("latency_budget_ms", "step_latency_ms")


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 16, n_test: int = 32) -> dict[str, list]:
    """Seeded scenarios labelled with the searched reference schedule."""
    return seeded_splits(seed, {"train": n_train, "dev": n_dev, "test": n_test}, make_scenario, to_example,
                         "diffusion")


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """Score = FID_reference / FID_predicted; over budget keeps half of that, scaled by budget/latency."""
    budget, step_ms = float(example.latency_budget_ms), float(example.step_latency_ms)
    ref_sampler, ref_steps = example.sampler, int(example.num_steps)
    ref_fid = fid(ref_sampler, ref_steps)
    hint = f"The best choice here: {ref_sampler} with {ref_steps} steps (FID {ref_fid:.2f}, {ref_steps * step_ms:g} ms)."
    sampler = choice(field(pred, "sampler"), SAMPLERS, SAMPLER_ALIASES)
    steps = integer(field(pred, "num_steps"))
    problems = []
    if sampler is None:
        problems.append(f"sampler {field(pred, 'sampler')!r} is not one of {list(SAMPLERS)}")
    if steps is None or steps < 1:
        problems.append(f"num_steps {field(pred, 'num_steps')!r} is not a positive integer")
    if problems:
        return result(0.0, "Unusable answer: " + "; ".join(problems) + ". " + hint)

    got_fid = fid(sampler, steps)
    took = latency_ms(steps, step_ms)
    quality = min(1.0, ref_fid / got_fid)
    notes = []
    if steps > T_MAX:
        notes.append(f"more than {T_MAX} steps cannot help (the model has T={T_MAX})")
    if steps < MIN_PUBLISHED_STEPS:
        notes.append(f"{steps} steps is below the 10 where any sampler has published quality")
    if took > budget:
        score = 0.5 * quality * budget / took
        return result(score, f"Over budget: {sampler} with {steps} steps takes {steps} x {step_ms:g} ms = {took:g} ms "
                             f"> {budget:g} ms. " + "".join(n + ". " for n in notes) + hint)
    if quality >= 0.999:
        return result(quality, f"Best quality within budget: {sampler}, {steps} steps, FID {got_fid:.2f}, {took:g} ms.")
    notes.append(f"FID {got_fid:.2f} vs {ref_fid:.2f} reachable"
                 + (f"; {ref_sampler} beats {sampler} at the same step count" if sampler != ref_sampler
                    and fid(ref_sampler, steps) < got_fid else "")
                 + (f"; the budget allows {int(budget // step_ms)} steps" if steps < ref_steps else ""))
    return result(quality, f"Fits the budget ({took:g} of {budget:g} ms) but " + "; ".join(notes) + ". " + hint)
