"""Federated optimization hyperparameters, scored by actually running federated training.

The metric runs a small numpy FedAvg / FedProx simulation with the proposed hyperparameters and
scores the final test accuracy against the best configuration of a grid search on the same
scenario. Nothing about the outcome is assumed; the simulation decides.

Simulation (deterministic from the scenario's inputs):

* Data: a 5-class Gaussian mixture in 8 dimensions (unit-variance classes, means drawn once per
  scenario), split over `num_clients` clients of 40 examples each. Each client's label mix is
  drawn from Dirichlet(alpha), the standard non-IID partition of Hsu et al. 2019 ("Measuring the
  Effects of Non-Identical Data Distribution for Federated Visual Classification"): small alpha
  means each client sees one or two classes, large alpha approaches IID.
* Model: multinomial logistic regression (softmax, with bias), weights start at zero.
* One round (McMahan et al. 2017, "Communication-Efficient Learning of Deep Networks from
  Decentralized Data", Algorithm 1): a fraction C of the clients (at least one) is sampled; each
  runs E local epochs of full-batch gradient descent from the global model; the server averages
  the client models weighted by their example counts (all equal here).
* FedProx (Li et al. 2020, "Federated Optimization in Heterogeneous Networks") adds the proximal
  term mu/2 ||w - w_global||^2 to each local objective, mu = 0.1 (one of the paper's values).
* Score: accuracy on a balanced held-out test set after the scenario's number of rounds.

Client sampling uses the same random stream for every configuration with the same fraction, so
two configurations are compared on the same clients (common random numbers).
"""

from __future__ import annotations

import itertools
import zlib
from functools import lru_cache
from typing import Literal

import dspy
import numpy as np

from signatures._common import choice, field, integer, number, result, seeded_splits

N_CLASSES = 5
N_FEATURES = 8
PER_CLIENT = 40
TEST_PER_CLASS = 100
CLASS_SEPARATION = 1.0
PROX_MU = 0.1
MAX_EPOCHS = 20               # the simulation caps local epochs (cost) and says so in the feedback
AGGREGATIONS = ("fedavg", "fedprox")
AGG_ALIASES = {"fed_avg": "fedavg", "federated_averaging": "fedavg", "fed_prox": "fedprox", "avg": "fedavg",
               "prox": "fedprox"}

GRID_EPOCHS = (1, 2, 5, 10, 20)
GRID_FRACTIONS = (0.1, 0.2, 0.5, 1.0)
GRID_LRS = (0.1, 0.3, 1.0, 3.0, 10.0)

CLIENTS = (5, 10, 15, 20)
ALPHAS = (0.05, 0.1, 0.3, 1.0, 10.0)
ROUNDS = (2, 3, 5, 10)


class ChooseFederatedConfig(dspy.Signature):
    """Choose federated-learning hyperparameters that reach the best test accuracy within the given number of communication rounds."""

    num_clients: int = dspy.InputField(desc="number of clients holding data")
    dirichlet_alpha: float = dspy.InputField(desc="label skew across clients: small (0.1) = very non-IID, large (10) = nearly IID")
    rounds: int = dspy.InputField(desc="communication rounds available")
    aggregation: Literal["fedavg", "fedprox"] = dspy.OutputField(desc="fedavg, or fedprox (adds a proximal term against client drift)")
    local_epochs: int = dspy.OutputField(desc="local epochs per client per round, e.g. 1-20")
    client_fraction: float = dspy.OutputField(desc="fraction of clients sampled each round, in (0, 1]")
    learning_rate: float = dspy.OutputField(desc="client learning rate, e.g. 0.1")


def _seed(num_clients: int, alpha: float, rounds: int) -> int:
    return zlib.crc32(f"federated:{num_clients}:{alpha!r}:{rounds}".encode())


@lru_cache(maxsize=256)
def make_data(num_clients: int, alpha: float, rounds: int):
    """Client datasets (K, 40, 9) with a bias column, labels (K, 40), and the test set."""
    rng = np.random.default_rng(_seed(num_clients, alpha, rounds))
    means = rng.normal(0.0, CLASS_SEPARATION, size=(N_CLASSES, N_FEATURES))

    def sample(labels):
        x = means[labels] + rng.normal(size=(len(labels), N_FEATURES))
        return np.concatenate([x, np.ones((len(labels), 1))], axis=1)

    mix = rng.dirichlet(np.full(N_CLASSES, float(alpha)), size=num_clients)
    y = np.stack([rng.choice(N_CLASSES, size=PER_CLIENT, p=p) for p in mix])
    x = np.stack([sample(labels) for labels in y])
    y_test = np.repeat(np.arange(N_CLASSES), TEST_PER_CLASS)
    x_test = sample(y_test)
    for arr in (x, y, x_test, y_test):
        arr.setflags(write=False)
    return x, y, x_test, y_test


def _selections(num_clients: int, alpha: float, rounds: int, fraction: float) -> list[np.ndarray]:
    """Clients sampled in each round; the same for every configuration with this fraction."""
    m = max(1, min(num_clients, int(round(fraction * num_clients))))
    rng = np.random.default_rng([_seed(num_clients, alpha, rounds), int(round(fraction * 1e6))])
    return [np.sort(rng.choice(num_clients, size=m, replace=False)) for _ in range(rounds)]


def simulate(num_clients: int, alpha: float, rounds: int, local_epochs: int, fraction: float,
             lrs, mus) -> np.ndarray:
    """Final test accuracy of federated training for each (lr, mu) pair, run side by side.

    `mus` = 0 is FedAvg, > 0 FedProx. Diverged runs (non-finite weights) score as chance.
    """
    x, y, x_test, y_test = make_data(num_clients, alpha, rounds)
    # The g configurations ride along the last axis, weights (m, d, C, g), so one batched matmul
    # per step serves them all. The softmax over the 5 classes is written as a chain of slice
    # operations: numpy's axis reductions over such a short axis are several times slower.
    lrs = np.asarray(lrs, dtype=float)
    mus = np.asarray(mus, dtype=float)
    g, d, c = lrs.shape[0], N_FEATURES + 1, N_CLASSES
    onehot = np.eye(c)[y][:, :, :, None]                           # (K, n, C, 1)
    w = np.zeros((d, c, g))
    epochs = max(1, min(int(local_epochs), MAX_EPOCHS))
    with np.errstate(all="ignore"):
        for chosen in _selections(num_clients, alpha, rounds, fraction):
            m = len(chosen)
            xs, ys = x[chosen], onehot[chosen]                     # (m, n, d), (m, n, C, 1)
            xs_t = xs.transpose(0, 2, 1) / PER_CLIENT              # (m, d, n), mean-gradient scaling
            local = np.broadcast_to(w, (m, d, c, g)).copy()
            for _ in range(epochs):
                z = (xs @ local.reshape(m, d, c * g)).reshape(m, -1, c, g)
                top = z[:, :, 0]
                for k in range(1, c):
                    top = np.maximum(top, z[:, :, k])
                z -= top[:, :, None]
                np.exp(z, out=z)
                total = z[:, :, 0].copy()
                for k in range(1, c):
                    total += z[:, :, k]
                z /= total[:, :, None]
                z -= ys                                            # softmax - onehot
                grad = (xs_t @ z.reshape(m, -1, c * g)).reshape(m, d, c, g)
                local -= lrs * (grad + mus * (local - w))
            w = local.mean(axis=0)
        pred = (x_test @ w.reshape(d, c * g)).reshape(-1, c, g).argmax(axis=1).T   # (g, n_test)
    acc = (pred == y_test).mean(axis=-1)
    finite = np.isfinite(w).all(axis=(0, 1))
    return np.where(finite, acc, 1.0 / N_CLASSES)


def accuracy_of(scenario: dict, aggregation: str, local_epochs: int, client_fraction: float,
                learning_rate: float) -> float:
    """Final test accuracy of one configuration on one scenario (memoised: evaluation and GEPA
    score the same answers, and the reference, many times)."""
    return _accuracy(int(scenario["num_clients"]), float(scenario["dirichlet_alpha"]), int(scenario["rounds"]),
                     aggregation, min(int(local_epochs), MAX_EPOCHS), float(client_fraction), float(learning_rate))


@lru_cache(maxsize=4096)
def _accuracy(num_clients: int, alpha: float, rounds: int, aggregation: str, local_epochs: int,
              fraction: float, lr: float) -> float:
    mu = PROX_MU if aggregation == "fedprox" else 0.0
    return float(simulate(num_clients, alpha, rounds, local_epochs, fraction, [lr], [mu])[0])


@lru_cache(maxsize=512)
def _search(num_clients: int, alpha: float, rounds: int) -> tuple[dict, float]:
    best_key, best = None, None
    pairs = list(itertools.product(AGGREGATIONS, GRID_LRS))
    for epochs, fraction in itertools.product(GRID_EPOCHS, GRID_FRACTIONS):
        accs = simulate(num_clients, alpha, rounds, epochs, fraction, [lr for _, lr in pairs],
                        [PROX_MU if a == "fedprox" else 0.0 for a, _ in pairs])
        for (agg, lr), acc in zip(pairs, accs):
            # best accuracy; ties go to less client compute and communication, then FedAvg
            key = (round(float(acc), 6), -epochs * fraction, -fraction, agg == "fedavg", -abs(np.log10(lr)))
            if best_key is None or key > best_key:
                best_key = key
                best = {"aggregation": agg, "local_epochs": epochs, "client_fraction": fraction, "learning_rate": lr}
    return best, best_key[0]


def reference(num_clients: int, dirichlet_alpha: float, rounds: int) -> dict:
    """Grid search (2 aggregations x 5 epochs x 4 fractions x 5 learning rates = 200 runs) for the best final accuracy."""
    return dict(_search(int(num_clients), float(dirichlet_alpha), int(rounds))[0])


def make_scenario(rng) -> dict:
    return {"num_clients": rng.choice(CLIENTS), "dirichlet_alpha": rng.choice(ALPHAS), "rounds": rng.choice(ROUNDS)}


def to_example(scenario: dict):
    return dspy.Example(**scenario, **reference(**scenario)).with_inputs("num_clients", "dirichlet_alpha", "rounds")


def load_splits(seed: int = 0, n_train: int = 24, n_dev: int = 16, n_test: int = 32) -> dict[str, list]:
    """Seeded scenarios labelled with the grid-searched best configuration."""
    return seeded_splits(seed, {"train": n_train, "dev": n_dev, "test": n_test}, make_scenario, to_example,
                         "federated")


def metric(example, pred, trace=None, pred_name=None, pred_trace=None):
    """Run the proposed configuration; score = (acc - chance) / (reference acc - chance), clipped to [0, 1].

    The feedback names each hyperparameter that differs from the reference and the accuracy the
    proposal would reach with only that one changed to the reference value."""
    scenario = {"num_clients": int(example.num_clients), "dirichlet_alpha": float(example.dirichlet_alpha),
                "rounds": int(example.rounds)}
    ref = {k: example[k] for k in ("aggregation", "local_epochs", "client_fraction", "learning_rate")}
    ref_acc = accuracy_of(scenario, **ref)
    hint = (f"The best configuration found: {ref['aggregation']}, {ref['local_epochs']} local epochs, "
            f"fraction {ref['client_fraction']:g}, lr {ref['learning_rate']:g} -> {ref_acc:.1%} accuracy.")
    got = {"aggregation": choice(field(pred, "aggregation"), AGGREGATIONS, AGG_ALIASES),
           "local_epochs": integer(field(pred, "local_epochs")),
           "client_fraction": number(field(pred, "client_fraction")),
           "learning_rate": number(field(pred, "learning_rate"))}
    if got["client_fraction"] is not None and 1 < got["client_fraction"] <= 100:
        got["client_fraction"] /= 100          # "50%" -> 0.5
    problems = []
    if got["aggregation"] is None:
        problems.append(f"aggregation {field(pred, 'aggregation')!r} is not one of {list(AGGREGATIONS)}")
    if got["local_epochs"] is None or got["local_epochs"] < 1:
        problems.append(f"local_epochs {field(pred, 'local_epochs')!r} is not a positive integer")
    if got["client_fraction"] is None or not 0 < got["client_fraction"] <= 1:
        problems.append(f"client_fraction {field(pred, 'client_fraction')!r} is not in (0, 1]")
    if got["learning_rate"] is None or not 0 < got["learning_rate"] <= 1e3:
        problems.append(f"learning_rate {field(pred, 'learning_rate')!r} is not a positive number")
    if problems:
        return result(0.0, "Unusable answer: " + "; ".join(problems) + ". " + hint)

    acc = accuracy_of(scenario, **got)
    chance = 1.0 / N_CLASSES
    score = (acc - chance) / (ref_acc - chance) if ref_acc > chance else float(acc >= ref_acc)
    desc = (f"{got['aggregation']}, {got['local_epochs']} local epochs, fraction {got['client_fraction']:g}, "
            f"lr {got['learning_rate']:g}")
    capped = f" (local epochs capped at {MAX_EPOCHS})" if got["local_epochs"] > MAX_EPOCHS else ""
    if acc >= ref_acc - 1e-9:
        return result(score, f"Simulated {desc}{capped}: {acc:.1%} accuracy, as good as the best configuration found.")
    fixes = []
    for key, value in ref.items():
        if got[key] != value:
            trial = dict(got, **{key: value})
            fixes.append(f"{key} {got[key]:g} -> {value:g} gives {accuracy_of(scenario, **trial):.1%}"
                         if key != "aggregation" else
                         f"{got[key]} -> {value} gives {accuracy_of(scenario, **trial):.1%}")
    return result(score, f"Simulated {desc}{capped}: {acc:.1%} accuracy after {scenario['rounds']} rounds with "
                         f"{scenario['num_clients']} clients (alpha {scenario['dirichlet_alpha']:g}). "
                         f"Changing one setting: " + "; ".join(fixes) + ". " + hint)
