"""Held-out log-likelihood on real tables bundled with flowfit.

Every table gets the same fixed split and preprocessing, applied to all models alike:

1. Label columns are dropped (:data:`TABLES` lists them).
2. Columns rounded to a grid (found by :func:`flowfit.preprocessing.detect_grid` on the
   whole table) get uniform noise over one grid cell, drawn with seed 1, so that no
   model can put unbounded density on repeated values.
3. The rows are shuffled with ``numpy.random.default_rng(0)``: the first 20 % are the
   test set, the next 10 % the validation set and the remaining 70 % the training set.
4. Columns are standardised with the training set's mean and standard deviation.

The flows train on the training set for a fixed budget with :func:`common.train` (no
early stopping, so the validation set is not used). GaussianMixture (full covariances)
and KernelDensity (Gaussian kernel) choose their number of components and bandwidth by
the validation log-likelihood, then refit on the training set. The score is the mean
test log-likelihood per row, in nats, on the standardised columns, with its standard
error. Subtracting ``log_scale_sum`` (in the results file) gives the data's original units.

Example:
    python benchmarks/real_data.py --table banknote --steps 3000
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import KernelDensity

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import KINDS, LIBRARIES, build, installed  # noqa: E402
from common import (  # noqa: E402
    RESULTS,
    environment,
    evaluate_log_prob,
    load_results,
    parse_list,
    standard_error,
    store_result,
    train,
)

from flowfit import datasets  # noqa: E402
from flowfit.preprocessing import detect_grid  # noqa: E402

# Bundled data set -> label columns left out of the density.
TABLES: dict[str, list[str]] = {
    "ccpp": [],
    "magic_gamma": ["class"],
    "htru2": ["class"],
    "protein_casp": [],
    "wine_quality_red": ["quality"],
    "banknote": ["class"],
}
TEST_FRACTION = 0.2
VALIDATION_FRACTION = 0.1
GMM_COMPONENTS = (1, 2, 5, 10, 20, 50)
KDE_BANDWIDTHS = tuple(np.round(np.geomspace(0.02, 1.0, 12), 4))
# Validation rows that score each KDE bandwidth; the chosen one is scored on every test row.
KDE_VALIDATION_ROWS = 2000
BASELINES = ("gaussian-mixture", "kernel-density")
ESTIMATOR = "flowfit-estimator"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="all", help="Comma-separated table names, or 'all'.")
    parser.add_argument("--libraries", default=",".join(LIBRARIES),
                        help="Comma-separated libraries; peers that are not installed are "
                        "skipped with a message.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Comma-separated flow kinds.")

    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per flow.")
    parser.add_argument("--batch-size", type=int, default=256, help="Rows per Adam step.")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate.")

    parser.add_argument("--layers", type=int, default=5, help="Autoregressive layers.")
    parser.add_argument("--hidden", type=int, default=64,
                        help="Units in each of the 2 hidden layers of every conditioner.")
    parser.add_argument("--bins", type=int, default=8, help="Spline bins (NSF).")

    parser.add_argument("--no-baselines", action="store_true",
                        help="Skip GaussianMixture and KernelDensity.")
    parser.add_argument("--estimator", action="store_true",
                        help="Also fit flowfit's FlowDensity(flow='nsf') with its defaults.")
    parser.add_argument("--max-rows", type=int, default=None,
                        help="Use only the first N shuffled rows of each table (smoke tests).")
    parser.add_argument("--skip", default="",
                        help="Comma-separated library:kind pairs to leave out, such as "
                        "normflows:maf.")
    parser.add_argument("--resume", action="store_true",
                        help="Skip runs whose key is already in the results file.")

    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of batches and weights.")
    parser.add_argument("--output", type=Path, default=RESULTS / "real_data.json",
                        help="Results file (JSON); the Markdown table goes beside it.")

    args = parser.parse_args(argv)
    names = list(TABLES)
    args.tables = names if args.table == "all" else parse_list(args.table, names, "table")
    args.libraries = parse_list(args.libraries, LIBRARIES, "library")
    args.kinds = parse_list(args.kinds, KINDS, "flow kind")
    return args


def prepare(name: str, max_rows: int | None = None) -> dict:
    """Load a table and return its standardised train, validation and test splits."""
    frame = datasets.load(name).drop(columns=TABLES[name])
    values = frame.to_numpy(dtype=np.float64)
    steps = np.array([detect_grid(values[:, i]) for i in range(values.shape[1])])
    noise = np.random.default_rng(1).uniform(-0.5, 0.5, size=values.shape)
    values = values + noise * steps

    order = np.random.default_rng(0).permutation(len(values))
    if max_rows is not None:
        order = order[:max_rows]
    n_test = round(TEST_FRACTION * len(order))
    n_val = round(VALIDATION_FRACTION * len(order))
    test, val, train_rows = (
        values[order[:n_test]],
        values[order[n_test : n_test + n_val]],
        values[order[n_test + n_val :]],
    )
    loc, scale = train_rows.mean(0), train_rows.std(0)
    return {
        "columns": list(frame.columns),
        "dequantized": {c: float(s) for c, s in zip(frame.columns, steps) if s > 0},
        "train": (train_rows - loc) / scale,
        "val": (val - loc) / scale,
        "test": (test - loc) / scale,
        "raw_train": train_rows,
        "raw_test": test,
        "log_scale_sum": float(np.log(scale).sum()),
    }


def score(log_likelihood: np.ndarray) -> dict:
    """Summarise per-row test log-likelihoods."""
    finite = np.isfinite(log_likelihood)
    if not finite.all():
        return {"ll": -np.inf, "ll_se": np.nan, "nonfinite": int((~finite).sum())}
    return {"ll": float(log_likelihood.mean()), "ll_se": standard_error(log_likelihood),
            "nonfinite": 0}


def run_flow(args: argparse.Namespace, data: dict, library: str, kind: str) -> dict:
    x_train = torch.tensor(data["train"], dtype=torch.float32)
    x_test = torch.tensor(data["test"], dtype=torch.float32)
    torch.manual_seed(args.seed)
    model = build(library, kind, x_train.shape[1], layers=args.layers, hidden=args.hidden,
                  bins=args.bins)
    run = train(model, x_train, steps=args.steps, batch_size=args.batch_size,
                learning_rate=args.learning_rate, seed=args.seed)
    return {
        "parameters": model.parameters,
        "steps": run.steps,
        "train_seconds": run.seconds,
        "final_loss": run.final_loss,
        "diverged": run.diverged,
        **score(evaluate_log_prob(model, x_test)),
    }


def run_gaussian_mixture(data: dict) -> dict:
    start = time.perf_counter()
    best = None
    for components in GMM_COMPONENTS:
        if components * 5 > len(data["train"]):
            continue
        model = GaussianMixture(components, covariance_type="full", random_state=0)
        model.fit(data["train"])
        val_ll = float(model.score(data["val"]))
        if best is None or val_ll > best[0]:
            best = (val_ll, components, model)
    _, components, model = best
    return {
        "components": components,
        "train_seconds": time.perf_counter() - start,
        **score(model.score_samples(data["test"])),
    }


def run_kernel_density(data: dict) -> dict:
    start = time.perf_counter()
    val = data["val"][:KDE_VALIDATION_ROWS]
    best = None
    for bandwidth in KDE_BANDWIDTHS:
        model = KernelDensity(bandwidth=float(bandwidth)).fit(data["train"])
        val_ll = float(model.score_samples(val).mean())
        if best is None or val_ll > best[0]:
            best = (val_ll, float(bandwidth), model)
    _, bandwidth, model = best
    return {
        "bandwidth": bandwidth,
        "train_seconds": time.perf_counter() - start,
        **score(model.score_samples(data["test"])),
    }


def run_estimator(args: argparse.Namespace, data: dict) -> dict:
    from flowfit import FlowDensity

    start = time.perf_counter()
    model = FlowDensity(flow="nsf", random_state=args.seed).fit(data["raw_train"])
    seconds = time.perf_counter() - start
    # FlowDensity scores in the data's units; shift to the standardised columns.
    log_likelihood = model.score_samples(data["raw_test"]) + data["log_scale_sum"]
    return {
        "parameters": sum(p.numel() for p in model.flow_.parameters() if p.requires_grad),
        "epochs": len(model.history_.train),
        "train_seconds": seconds,
        **score(log_likelihood),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    libraries = installed(args.libraries)
    settings = {
        key: getattr(args, key)
        for key in ("steps", "batch_size", "learning_rate", "layers", "hidden", "bins", "seed",
                    "max_rows")
    }
    budget = f"steps-{args.steps}"
    for name in args.tables:
        data = prepare(name, args.max_rows)
        jobs = [(library, kind) for kind in args.kinds for library in libraries]
        if not args.no_baselines:
            jobs += [(baseline, "baseline") for baseline in BASELINES]
        if args.estimator:
            jobs.append((ESTIMATOR, "default"))
        done = load_results(args.output)["runs"] if args.resume else {}
        for library, kind in jobs:
            key = f"{budget}/{name}/{library}/{kind}"
            if f"{library}:{kind}" in args.skip.split(",") or key in done:
                continue
            if library == "gaussian-mixture":
                record = run_gaussian_mixture(data)
            elif library == "kernel-density":
                record = run_kernel_density(data)
            elif library == ESTIMATOR:
                record = run_estimator(args, data)
            else:
                record = run_flow(args, data, library, kind)
            record.update(
                table=name, library=library, kind=kind, budget=budget,
                features=data["train"].shape[1], rows={
                    split: len(data[split]) for split in ("train", "val", "test")
                },
                dequantized=data["dequantized"], log_scale_sum=data["log_scale_sum"],
                settings=settings, environment=environment(),
            )
            store_result(args.output, key, record)
            print(f"{name:17s} {library:17s} {kind:8s} test LL {record['ll']:.4f} "
                  f"± {record['ll_se']:.4f}  ({record['train_seconds']:.0f} s)", flush=True)

    from make_tables import write_real_data_markdown

    write_real_data_markdown(args.output)


if __name__ == "__main__":
    main()
