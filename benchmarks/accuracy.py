"""Accuracy on targets with an exact density: KL(p || q) of flows fitted to target samples.

For each target and library the script draws a training sample, standardises it with its
own mean and standard deviation, trains the flow with the loop of
:func:`common.train` (the same batches, Adam and budget for every library), and scores
the fit by the Monte Carlo estimate

    KL(p || q) = E_p[log p(x) - log q(x)]

on fresh target samples, with its standard error, in nats. ``log q`` is the flow's
density in the data's units: the standardisation's log-Jacobian is subtracted.

Each run is stored under its own key in the results file as soon as it finishes, so
targets and libraries can be run one at a time and their results accumulate. The
Markdown tables are rewritten from the whole results file at the end.

Example:
    python benchmarks/accuracy.py --target ring --steps 3000
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import KINDS, LIBRARIES, Model, build, installed  # noqa: E402
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

from flowfit.datasets.targets import TARGETS, Target  # noqa: E402

# flowfit's scikit-learn estimator with its own defaults, run beside the equal-budget
# comparison: it has its own training loop, learning rate and early stopping.
ESTIMATOR = "flowfit-estimator"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="all",
                        help="Comma-separated target names, or 'all'.")
    parser.add_argument("--libraries", default=",".join(LIBRARIES),
                        help="Comma-separated libraries; peers that are not installed are "
                        "skipped with a message.")
    parser.add_argument("--kinds", default=",".join(KINDS), help="Comma-separated flow kinds.")
    parser.add_argument("--steps", type=int, default=3000, help="Adam steps per run.")
    parser.add_argument("--seconds", type=float, default=None,
                        help="Wall-clock seconds per run instead of a step count.")
    parser.add_argument("--batch-size", type=int, default=256, help="Rows per Adam step.")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="Adam learning rate.")
    parser.add_argument("--train-size", type=int, default=20_000,
                        help="Training rows drawn from each target.")
    parser.add_argument("--test-size", type=int, default=50_000,
                        help="Fresh target rows for the KL estimate.")
    parser.add_argument("--layers", type=int, default=5, help="Autoregressive layers.")
    parser.add_argument("--hidden", type=int, default=64,
                        help="Units in each of the 2 hidden layers of every conditioner.")
    parser.add_argument("--bins", type=int, default=8, help="Spline bins (NSF).")
    parser.add_argument("--estimator", action="store_true",
                        help="Also fit flowfit's FlowDensity with its default settings.")
    parser.add_argument("--estimator-only", action="store_true",
                        help="Fit only flowfit's FlowDensity with its default settings, "
                        "not the equal-budget library runs.")
    parser.add_argument("--skip", default="",
                        help="Comma-separated library:kind pairs to leave out, such as "
                        "normflows:maf.")
    parser.add_argument("--resume", action="store_true",
                        help="Skip runs whose key is already in the results file.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads.")
    parser.add_argument("--seed", type=int, default=0, help="Seed of data, batches and weights.")
    parser.add_argument("--output", type=Path, default=RESULTS / "accuracy.json",
                        help="Results file (JSON); the Markdown table goes beside it.")
    args = parser.parse_args(argv)
    names = list(TARGETS)
    args.targets = names if args.target == "all" else parse_list(args.target, names, "target")
    args.libraries = parse_list(args.libraries, LIBRARIES, "library")
    args.kinds = parse_list(args.kinds, KINDS, "flow kind")
    if args.seconds is not None:
        args.steps = None
    return args


def budget_name(args: argparse.Namespace) -> str:
    """Name the training budget: ``steps-3000`` or ``seconds-20``."""
    if args.steps is None:
        return f"seconds-{args.seconds:g}"
    return f"steps-{args.steps}"


def kl_estimate(target: Target, log_q: np.ndarray, x_test: torch.Tensor) -> dict[str, float]:
    """Return the Monte Carlo KL(p || q) and its standard error from model log-densities."""
    log_p = target.log_prob(x_test.double()).numpy()
    difference = log_p - log_q
    finite = np.isfinite(difference)
    if not finite.all():
        return {"kl": math.inf, "kl_se": math.nan, "nonfinite": int((~finite).sum())}
    return {"kl": float(difference.mean()), "kl_se": standard_error(difference), "nonfinite": 0}


def run_flow(
    args: argparse.Namespace,
    target: Target,
    library: str,
    kind: str,
    x_train: torch.Tensor,
    x_test: torch.Tensor,
) -> dict:
    """Train one library's flow on standardised data and score it."""
    loc = x_train.mean(0)
    scale = x_train.std(0)
    torch.manual_seed(args.seed)
    model: Model = build(library, kind, target.features, layers=args.layers,
                         hidden=args.hidden, bins=args.bins)
    run = train(model, (x_train - loc) / scale, steps=args.steps, seconds=args.seconds,
                batch_size=args.batch_size, learning_rate=args.learning_rate, seed=args.seed)
    log_q = evaluate_log_prob(model, (x_test - loc) / scale) - torch.log(scale).sum().item()
    return {
        "parameters": model.parameters,
        "steps": run.steps,
        "train_seconds": run.seconds,
        "final_loss": run.final_loss,
        "diverged": run.diverged,
        **kl_estimate(target, log_q, x_test),
    }


def run_estimator(
    args: argparse.Namespace, target: Target, x_train: torch.Tensor, x_test: torch.Tensor
) -> dict:
    """Fit FlowDensity with its defaults, for at most the run's step budget.

    The estimator holds out 10% of the rows for early stopping, so its epochs are capped
    at the number that takes ``args.steps`` Adam steps on the other 90%.
    """
    from flowfit import FlowDensity

    options = {}
    if args.steps is not None:
        steps_per_epoch = math.ceil(0.9 * x_train.shape[0] / args.batch_size)
        options["max_epochs"] = max(1, args.steps // steps_per_epoch)
    estimator = FlowDensity(random_state=args.seed, batch_size=args.batch_size, **options)
    start = time.perf_counter()
    estimator.fit(x_train.numpy())
    seconds = time.perf_counter() - start
    log_q = estimator.score_samples(x_test.numpy())
    parameters = sum(p.numel() for p in estimator.flow_.parameters() if p.requires_grad)
    epochs = len(estimator.history_.train)
    return {
        "parameters": parameters,
        "flow": estimator.preset_,
        "flow_options": estimator.flow_options_,
        "tails": estimator.tails_,
        "epochs": epochs,
        "train_seconds": seconds,
        "diverged": False,
        **kl_estimate(target, log_q, x_test),
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    libraries = installed(args.libraries)
    budget = budget_name(args)
    settings = {
        key: getattr(args, key)
        for key in ("steps", "seconds", "batch_size", "learning_rate", "train_size",
                    "test_size", "layers", "hidden", "bins", "seed")
    }
    for name in args.targets:
        target = TARGETS[name]()
        x_train = target.sample(args.train_size, torch.Generator().manual_seed(args.seed))
        x_test = target.sample(args.test_size, torch.Generator().manual_seed(args.seed + 1))
        jobs = [(library, kind) for kind in args.kinds for library in libraries]
        if args.estimator_only:
            jobs = []
        if args.estimator or args.estimator_only:
            jobs.append((ESTIMATOR, "default"))
        done = load_results(args.output)["runs"] if args.resume else {}
        for library, kind in jobs:
            key = f"{budget}/{name}/{library}/{kind}"
            if f"{library}:{kind}" in args.skip.split(",") or key in done:
                continue
            if library == ESTIMATOR:
                record = run_estimator(args, target, x_train, x_test)
            else:
                record = run_flow(args, target, library, kind, x_train, x_test)
            record.update(target=name, library=library, kind=kind, budget=budget,
                          features=target.features, settings=settings,
                          environment=environment())
            store_result(args.output, key, record)
            print(f"{budget} {name:13s} {library:17s} {kind:7s} KL {record['kl']:.4f} "
                  f"± {record['kl_se']:.4f}  ({record['train_seconds']:.0f} s)", flush=True)

    from make_tables import write_accuracy_markdown

    write_accuracy_markdown(args.output)


if __name__ == "__main__":
    main()
