"""Write the Markdown tables of the benchmark results, and fill them into docs/benchmarks.md.

Each benchmark script calls the writer of its own table when it finishes. Run this script
to rewrite all tables and the generated blocks of the docs page, which lie between
``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` lines.

Example:
    python benchmarks/make_tables.py
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from adapters import KINDS, LIBRARIES  # noqa: E402
from common import RESULTS, load_results, markdown_table  # noqa: E402

DOCS_PAGE = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"
PEERS = [library for library in LIBRARIES if library != "flowfit"]
TARGET_ORDER = ["normal", "bimodal", "lognormal", "student-t", "ring", "checkerboard",
                "banana", "funnel", "mixture-10d", "funnel-16d"]
TABLE_ORDER = ["ccpp", "magic_gamma", "htru2", "protein_casp", "wine_quality_red", "banknote"]
UNITS = {"train": "steps/s", "log_prob": "rows/s", "sample": "samples/s"}


def _value(record: dict | None, key: str, digits: int = 4) -> str:
    if record is None:
        return "—"
    value = record[key]
    if not math.isfinite(value):
        return "diverged" if record.get("diverged") else f"{value}"
    return f"{value:.{digits}f} ± {record[key + '_se']:.{digits}f}"


def _ordered(names: set[str], order: list[str]) -> list[str]:
    return [n for n in order if n in names] + sorted(names - set(order))


def _budgets(runs: dict) -> list[str]:
    return sorted({record["budget"] for record in runs.values()})


def _compare(own: dict | None, peers: dict[str, dict], key: str, higher_is_better: bool
             ) -> str:
    """Say how flowfit's record compares with the best peer record, in standard errors."""
    candidates = {n: r for n, r in peers.items() if r is not None and math.isfinite(r[key])}
    if own is None or not candidates:
        return "—"
    pick = max if higher_is_better else min
    best_name = pick(candidates, key=lambda n: candidates[n][key])
    best = candidates[best_name]
    difference = own[key] - best[key]
    error = math.hypot(own[key + "_se"], best[key + "_se"])
    better = difference > 0 if higher_is_better else difference < 0
    verdict = "better" if better else "worse"
    if abs(difference) < 2 * error:
        verdict = "tie (within 2 SE)"
    return f"{verdict}: {difference:+.4f} ± {error:.4f} vs {best_name}"


def accuracy_tables(path: Path) -> str:
    """Return the Markdown tables of an accuracy results file."""
    runs = load_results(path)["runs"]
    sections = []
    for budget in _budgets(runs):
        records = {k: r for k, r in runs.items() if r["budget"] == budget}
        targets = _ordered({r["target"] for r in records.values()}, TARGET_ORDER)

        def get(target, library, kind, records=records, budget=budget):
            return records.get(f"{budget}/{target}/{library}/{kind}")

        headers = ["target", "D"] + [f"{lib} {kind.upper()}" for kind in KINDS
                                     for lib in LIBRARIES]
        has_estimator = any(r["library"] == "flowfit-estimator" for r in records.values())
        if has_estimator:
            headers.append("FlowDensity defaults")
        rows = []
        for target in targets:
            features = next(r["features"] for r in records.values() if r["target"] == target)
            row = [target, str(features)]
            row += [_value(get(target, lib, kind), "kl") for kind in KINDS for lib in LIBRARIES]
            if has_estimator:
                row.append(_value(get(target, "flowfit-estimator", "default"), "kl"))
            rows.append(row)
        sections.append(f"**KL(p ‖ q) in nats, budget {budget}** (lower is better; "
                        "± one standard error)\n\n" + markdown_table(headers, rows))

        headers = ["target"] + [f"flowfit {kind.upper()} vs best peer {kind.upper()}"
                                for kind in KINDS]
        rows = []
        for target in targets:
            row = [target]
            for kind in KINDS:
                peers = {lib: get(target, lib, kind) for lib in PEERS}
                row.append(_compare(get(target, "flowfit", kind), peers, "kl", False))
            rows.append(row)
        sections.append(f"**flowfit against the best peer, budget {budget}** (difference "
                        "of KL, flowfit minus peer, ± the standard error of the difference)"
                        "\n\n" + markdown_table(headers, rows))
    return "\n\n".join(sections)


def parameter_table(paths: list[Path]) -> str:
    """Return the parameter counts of every flow, by number of features."""
    counts: dict[tuple[int, str, str], int] = {}
    for path in paths:
        for record in load_results(path)["runs"].values():
            if record["library"] in LIBRARIES and "parameters" in record:
                key = (record["features"], record["library"], record["kind"])
                counts[key] = record["parameters"]
    features = sorted({key[0] for key in counts})
    headers = ["D"] + [f"{lib} {kind.upper()}" for kind in KINDS for lib in LIBRARIES]
    rows = [[str(d)] + [str(counts.get((d, lib, kind), "—")) for kind in KINDS
                        for lib in LIBRARIES] for d in features]
    return markdown_table(headers, rows)


def real_data_tables(path: Path) -> str:
    """Return the Markdown tables of a real-data results file."""
    runs = load_results(path)["runs"]
    sections = []
    for budget in _budgets(runs):
        records = {k: r for k, r in runs.items() if r["budget"] == budget}
        tables = _ordered({r["table"] for r in records.values()}, TABLE_ORDER)

        def get(table, library, kind, records=records, budget=budget):
            return records.get(f"{budget}/{table}/{library}/{kind}")

        columns = [(lib, kind, f"{lib} {kind.upper()}") for kind in KINDS for lib in LIBRARIES]
        columns += [("gaussian-mixture", "baseline", "GaussianMixture"),
                    ("kernel-density", "baseline", "KernelDensity")]
        if any(r["library"] == "flowfit-estimator" for r in records.values()):
            columns.append(("flowfit-estimator", "default", "FlowDensity(flow='nsf')"))
        headers = ["table", "D", "train / test rows"] + [c[2] for c in columns]
        rows = []
        for table in tables:
            sample = next(r for r in records.values() if r["table"] == table)
            row = [table, str(sample["features"]),
                   f"{sample['rows']['train']} / {sample['rows']['test']}"]
            for library, kind, _ in columns:
                record = get(table, library, kind)
                cell = _value(record, "ll", 3)
                if record is not None and "components" in record:
                    cell += f" (K={record['components']})"
                if record is not None and "bandwidth" in record:
                    cell += f" (h={record['bandwidth']:g})"
                row.append(cell)
            rows.append(row)
        sections.append(f"**Held-out mean log-likelihood in nats per row, budget {budget}** "
                        "(standardised columns; higher is better; ± one standard error)"
                        "\n\n" + markdown_table(headers, rows))

        headers = (["table"] + [f"flowfit {kind.upper()} vs best peer {kind.upper()}"
                                for kind in KINDS] + ["flowfit's best vs best baseline"])
        rows = []
        for table in tables:
            row = [table]
            for kind in KINDS:
                peers = {lib: get(table, lib, kind) for lib in PEERS}
                row.append(_compare(get(table, "flowfit", kind), peers, "ll", True))
            own = [get(table, "flowfit", kind) for kind in KINDS]
            own = [r for r in own if r is not None]
            best_own = max(own, key=lambda r: r["ll"]) if own else None
            baselines = {"GaussianMixture": get(table, "gaussian-mixture", "baseline"),
                         "KernelDensity": get(table, "kernel-density", "baseline")}
            row.append(_compare(best_own, baselines, "ll", True))
            rows.append(row)
        sections.append(f"**flowfit against the best peer and the best baseline, budget "
                        f"{budget}** (difference of log-likelihood, flowfit minus other, ± "
                        "the standard error of the difference)\n\n"
                        + markdown_table(headers, rows))
    return "\n\n".join(sections)


def speed_tables(path: Path) -> str:
    """Return the speed and peak memory tables of a speed results file."""
    runs = load_results(path)["runs"]
    configs = sorted({(r["kind"], r["features"], r["measure"]) for r in runs.values()},
                     key=lambda c: (c[0], c[1], list(UNITS).index(c[2])))
    headers = (["flow", "D", "measure", "unit"] + list(LIBRARIES)
               + [f"flowfit / {peer}" for peer in PEERS] + ["flowfit / fastest peer"])
    rows = []
    memory_rows = []
    for kind, features, measure in configs:
        rates = {}
        memory = {}
        for library in LIBRARIES:
            record = runs.get(f"{kind}-{features}/{measure}/{library}")
            if record is not None:
                rates[library] = record["rate_cpu"]
                memory[library] = record.get("peak_mib")
        row = [kind.upper(), str(features), measure, UNITS[measure]]
        row += [f"{rates[lib]:.4g}" if lib in rates else "—" for lib in LIBRARIES]
        own = rates.get("flowfit")
        ratios = [f"{own / rates[peer]:.2f}" if own and peer in rates else "—"
                  for peer in PEERS]
        peer_rates = [rates[peer] for peer in PEERS if peer in rates]
        fastest = f"{own / max(peer_rates):.2f}" if own and peer_rates else "—"
        rows.append(row + ratios + [fastest])
        memory_rows.append(
            [kind.upper(), str(features), measure]
            + [f"{memory[lib]:.1f}" if memory.get(lib) is not None else "—"
               for lib in LIBRARIES]
        )
    rates_table = markdown_table(headers, rows)
    memory_table = markdown_table(["flow", "D", "measure"] + [f"{lib} (MiB)" for lib in
                                                              LIBRARIES], memory_rows)
    return ("**Throughput per CPU second** (median of the repetitions; ratios above 1 mean "
            "flowfit is faster)\n\n" + rates_table
            + "\n\n**Peak memory of live tensors during one call, MiB**\n\n" + memory_table)


def environment_table(paths: list[Path]) -> str:
    """Return the machine and versions recorded with the results."""
    environments = []
    for path in paths:
        for record in load_results(path)["runs"].values():
            environments.append(record["environment"])
    if not environments:
        return "No results yet."
    environments.sort(key=lambda e: e["date"])
    first = environments[0]
    dates = [e["date"] for e in environments]
    commits = {e["flowfit_commit"] for e in environments}
    rows = [
        ["CPU", f"{first['cpu']} ({first['logical_cpus']} logical CPUs, shared with other "
                "work)"],
        ["torch threads", ", ".join(sorted({str(e["torch_threads"]) for e in environments}))],
        ["platform", first["platform"]],
        ["Python", first["python"]],
        ["torch", first["torch"]],
        ["flowfit commit", f"{environments[0]['flowfit_commit']} to "
                           f"{environments[-1]['flowfit_commit']} ({len(commits)} states of "
                           "the working tree)"],
        *[[name, version] for name, version in first["versions"].items() if name != "flowfit"],
        ["measured", f"{dates[0]} to {dates[-1]}"],
    ]
    return markdown_table(["", ""], rows)


def _write(path: Path, text: str) -> None:
    path.write_text(text + "\n")
    print(f"wrote {path}")


def write_accuracy_markdown(path: Path) -> None:
    """Write the accuracy tables beside the results file."""
    _write(path.with_suffix(".md"), accuracy_tables(path))


def write_real_data_markdown(path: Path) -> None:
    """Write the real-data tables beside the results file."""
    _write(path.with_suffix(".md"), real_data_tables(path))


def write_speed_markdown(path: Path) -> None:
    """Write the speed tables beside the results file."""
    _write(path.with_suffix(".md"), speed_tables(path))


def fill_docs(page: Path, blocks: dict[str, str]) -> None:
    """Replace each generated block of ``page`` with new text."""
    text = page.read_text()
    for name, content in blocks.items():
        pattern = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"error: {page} has no <!-- {name}:start --> block.")
        text = pattern.sub(lambda m: m.group(1) + content + "\n" + m.group(2), text)
    page.write_text(text)
    print(f"filled {page}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=RESULTS,
                        help="Folder with accuracy.json, real_data.json and speed.json.")
    parser.add_argument("--docs", type=Path, default=DOCS_PAGE,
                        help="Docs page whose generated blocks are filled.")
    args = parser.parse_args(argv)
    accuracy = args.results / "accuracy.json"
    real_data = args.results / "real_data.json"
    speed = args.results / "speed.json"
    write_accuracy_markdown(accuracy)
    write_real_data_markdown(real_data)
    write_speed_markdown(speed)
    fill_docs(args.docs, {
        "environment": environment_table([accuracy, real_data, speed]),
        "accuracy": accuracy_tables(accuracy),
        "parameters": parameter_table([accuracy, real_data]),
        "real-data": real_data_tables(real_data),
        "speed": speed_tables(speed),
    })


if __name__ == "__main__":
    main()
