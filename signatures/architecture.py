"""Architecture search: the most accurate ImageNet backbone that meets a latency and a memory budget.

Quality and size of each backbone are torchvision's published numbers for its ImageNet-1k
weights (the "Table of all available classification weights" in torchvision's documentation,
the `acc@1`, `_ops` and `_file_size` fields of each weight's metadata): top-1 accuracy at
224 px (240-380 px for EfficientNet-B1..B4, as each is evaluated), billions of multiply-adds per
image ("GFLOPS" there) and the fp32 weight file in MB, which is what the memory budget limits.

Latency at batch 1 is multiply-adds divided by the device's measured rate. Networks built from
inverted residual blocks (depthwise convolutions and squeeze-excitation: MobileNetV2/V3,
EfficientNet) run at a much lower rate per multiply-add on CPUs than dense networks (ResNet,
RegNet, ConvNeXt, ViT, Swin), so each device has one rate per kind, from published timings:

* `server-cpu-core`: one core of an Intel Xeon E5-2690 (Tan & Le, "EfficientNet", ICML 2019,
  Table 4): ResNet-152 (11.5 G multiply-adds) in 554 ms -> 20.8 G/s for dense networks;
  EfficientNet-B1 (0.70 G) in 98 ms -> 7.1 G/s for inverted residual networks.
* `phone-cpu`: one big core of a Google Pixel 1, TFLite float (Howard et al., "Searching for
  MobileNetV3", ICCV 2019, Table 3): MobileNetV3-Large (0.22 G) in 51 ms, MobileNetV2 (0.30 G)
  in 64 ms -> 4.3 G/s for inverted residual networks. That paper times no dense network; the
  dense rate assumes the server core's dense/inverted-residual ratio (2.9x): 12.6 G/s.

The reference answer is the most accurate backbone within both budgets (the faster one on a
tie). The metric grades the choice by the top-1 points it gives up against that answer, and the
accuracy estimate against the table, with feedback that names the budget a choice breaks.
"""

from __future__ import annotations

import math
from typing import Literal

import dspy

from runner.errors import RunnerError
from signatures._common import choice, field, number, result, seeded_splits

# name: (top-1 %, G multiply-adds, fp32 weights MB, inverted residual?) -- torchvision weights metadata
BACKBONES = {
    "mobilenet_v3_small": (67.668, 0.057, 9.829, True),
    "mobilenet_v2": (72.154, 0.301, 13.598, True),
    "mobilenet_v3_large": (75.274, 0.217, 21.107, True),
    "efficientnet_b0": (77.692, 0.386, 20.451, True),
    "efficientnet_b1": (79.838, 0.687, 30.136, True),
    "efficientnet_b2": (80.608, 1.088, 35.174, True),
    "efficientnet_b3": (82.008, 1.827, 47.184, True),
    "efficientnet_b4": (83.384, 4.394, 74.489, True),
    "resnet18": (69.758, 1.814, 44.661, False),
    "resnet34": (73.314, 3.664, 83.275, False),
    "resnet50": (80.858, 4.089, 97.790, False),
    "resnet101": (81.886, 7.801, 170.530, False),
    "resnet152": (82.284, 11.514, 230.474, False),
    "regnet_y_400mf": (75.804, 0.402, 16.806, False),
    "regnet_y_800mf": (78.828, 0.834, 24.774, False),
    "regnet_y_1_6gf": (80.876, 1.612, 43.152, False),
    "regnet_y_3_2gf": (81.982, 3.176, 74.567, False),
    "convnext_tiny": (82.520, 4.456, 109.119, False),
    "convnext_small": (83.616, 8.684, 191.703, False),
    "convnext_base": (84.062, 15.355, 338.064, False),
    "vit_b_16": (81.072, 17.564, 330.285, False),
    "swin_t": (81.474, 4.491, 108.190, False),
    "swin_s": (83.196, 8.741, 189.786, False),
    "swin_b": (83.582, 15.431, 335.364, False),
}
Backbone = Literal[
    "mobilenet_v3_small", "mobilenet_v2", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b1",
    "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "resnet18", "resnet34", "resnet50", "resnet101",
    "resnet152", "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "convnext_tiny",
    "convnext_small", "convnext_base", "vit_b_16", "swin_t", "swin_s", "swin_b",
]
# device: (G multiply-adds per second for dense networks, for inverted residual networks), batch 1
DEVICES = {
    "server-cpu-core": (11.514 / 0.554, 0.700 / 0.098),
    "phone-cpu": (12.6, 0.217 / 0.051),
}
DEVICE_TEXT = {
    "server-cpu-core": "one core of a server CPU (Intel Xeon E5-2690)",
    "phone-cpu": "one big core of a phone CPU (Google Pixel 1)",
}
LATENCY_BUDGETS = {"server-cpu-core": (20, 35, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200),
                   "phone-cpu": (10, 15, 20, 30, 45, 60, 90, 120, 180, 250, 350, 500)}
MEMORY_BUDGETS_MB = (12, 15, 20, 25, 35, 50, 75, 100, 150, 200, 300, 400)
POINTS_SCALE = 2.0      # each 2 top-1 points given up cost a factor e
ALIASES = {"vit_b16": "vit_b_16", "vit_base_16": "vit_b_16", "swin_tiny": "swin_t", "swin_small": "swin_s",
           "swin_base": "swin_b", "mobilenetv2": "mobilenet_v2", "mobilenetv3_small": "mobilenet_v3_small",
           "mobilenetv3_large": "mobilenet_v3_large"}


class ChooseBackbone(dspy.Signature):
    """Choose the most accurate ImageNet classification backbone that meets the latency and memory budgets, and estimate its top-1 accuracy."""

    device: str = dspy.InputField(desc="where the model runs, one image at a time")
    latency_budget_ms: int = dspy.InputField(desc="the longest allowed time per image, in milliseconds")
    memory_budget_mb: int = dspy.InputField(desc="the largest allowed fp32 weight file, in MB")
    backbone: Backbone = dspy.OutputField(desc="the chosen architecture and size (torchvision name)")
    expected_top1: float = dspy.OutputField(desc="ImageNet-1k top-1 accuracy of that backbone, in percent")


def _device(text: str) -> str:
    key = next((k for k, v in DEVICE_TEXT.items() if text in (k, v)), None)
    if key is None:
        raise RunnerError(f"unknown device {text!r} for the architecture task", f"use one of {sorted(DEVICE_TEXT)}")
    return key


def latency_ms(device: str, backbone: str) -> float:
    """Batch-1 latency: multiply-adds over the device's rate for this kind of network."""
    dense, inverted = DEVICES[_device(device)]
    _, gmacs, _, is_inverted = BACKBONES[backbone]
    return 1000.0 * gmacs / (inverted if is_inverted else dense)


def feasible(device: str, latency_budget_ms: float, memory_budget_mb: float) -> list[str]:
    return [b for b, (_, _, mb, _) in BACKBONES.items()
            if latency_ms(device, b) <= latency_budget_ms and mb <= memory_budget_mb]


def reference(device: str, latency_budget_ms: float, memory_budget_mb: float) -> dict | None:
    """The most accurate backbone within both budgets (the faster on a tie); None if nothing fits."""
    options = feasible(device, latency_budget_ms, memory_budget_mb)
    if not options:
        return None
    best = max(options, key=lambda b: (BACKBONES[b][0], -latency_ms(device, b)))
    return {"backbone": best, "expected_top1": BACKBONES[best][0]}


def make_scenario(rng) -> dict:
    """A (device, budgets) where the budgets rule out some backbones and leave at least two."""
    while True:
        device = rng.choice(sorted(DEVICES))
        s = {"device": DEVICE_TEXT[device], "latency_budget_ms": rng.choice(LATENCY_BUDGETS[device]),
             "memory_budget_mb": rng.choice(MEMORY_BUDGETS_MB)}
        n = len(feasible(s["device"], s["latency_budget_ms"], s["memory_budget_mb"]))
        if 2 <= n < len(BACKBONES):
            return s


def to_example(scenario: dict):
    return dspy.Example(**scenario, **reference(**scenario)).with_inputs("device", "latency_budget_ms",
                                                                         "memory_budget_mb")


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 16, n_test: int = 32) -> dict[str, list]:
    """Seeded scenarios labelled with the reference backbone."""
    return seeded_splits(seed, {"train": n_train, "dev": n_dev, "test": n_test}, make_scenario, to_example,
                         "architecture")


def _estimate_score(estimate: float | None, actual: float) -> float:
    """Full credit within 1 point of the published top-1, none from 11 points off."""
    if estimate is None:
        return 0.0
    if estimate <= 1.0:  # written as a fraction (0.78)
        estimate *= 100.0
    return max(0.0, min(1.0, 1.0 - (abs(estimate - actual) - 1.0) / 10.0))


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """0.8 for the choice (top-1 points given up against the reference, within budget), 0.2 for
    the accuracy estimate. A choice over a budget keeps at most 30% of that, scaled by how far over."""
    device, lat_budget, mem_budget = example.device, float(example.latency_budget_ms), float(example.memory_budget_mb)
    best = example.backbone
    best_acc = BACKBONES[best][0]
    picked = choice(field(pred, "backbone"), BACKBONES, ALIASES)
    if picked is None:
        return result(0.0, f"Unusable answer: backbone {field(pred, 'backbone')!r} is not one of the catalogue "
                           f"({', '.join(BACKBONES)}). A good answer here: {best} ({best_acc:.1f}% top-1).")
    acc, gmacs, mb, _ = BACKBONES[picked]
    latency = latency_ms(device, picked)
    s_est = _estimate_score(number(field(pred, "expected_top1")), acc)
    over = []
    if latency > lat_budget:
        over.append(f"takes {latency:.0f} ms per image on {device} ({gmacs:g} G multiply-adds) > the {lat_budget:g} ms budget")
    if mb > mem_budget:
        over.append(f"has {mb:.0f} MB of fp32 weights > the {mem_budget:g} MB budget")
    if over:
        ratio = max(latency / lat_budget, mb / mem_budget)
        return result(0.3 * (0.8 + 0.2 * s_est) / ratio,
                      f"Over budget: {picked} " + " and ".join(over) + f". The most accurate backbone within both "
                      f"budgets is {best}: {best_acc:.1f}% top-1, {latency_ms(device, best):.0f} ms, "
                      f"{BACKBONES[best][2]:.0f} MB.")
    s_choice = math.exp(-(best_acc - acc) / POINTS_SCALE)
    notes = []
    if picked != best:
        notes.append(f"{best} also fits ({latency_ms(device, best):.0f} ms, {BACKBONES[best][2]:.0f} MB) and is "
                     f"{best_acc - acc:.1f} points more accurate ({best_acc:.1f}% vs {acc:.1f}%)")
    if s_est < 1.0:
        notes.append(f"{picked} has {acc:.1f}% top-1 on ImageNet-1k, not {field(pred, 'expected_top1')}")
    score = 0.8 * s_choice + 0.2 * s_est
    if not notes:
        return result(score, f"Good: {picked} is the most accurate fit ({acc:.1f}% top-1, {latency:.0f} ms, {mb:.0f} MB).")
    return result(score, f"Fits ({latency:.0f} ms, {mb:.0f} MB), but: " + "; ".join(notes) + ".")
