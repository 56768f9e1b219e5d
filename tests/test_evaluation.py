"""Evaluation against baselines: numbers match scikit-learn run directly; the CLI table."""

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.covariance import EmpiricalCovariance
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits
from typer.testing import CliRunner

from flowfit import DataError, FlowDensity, datasets
from flowfit.cli.app import app
from flowfit.diagnostics import evaluate, split_rows
from flowfit.diagnostics.evaluation import _cell_log_prob

BANDWIDTHS = np.geomspace(0.05, 1.0, 10)


@pytest.fixture(scope="module")
def ccpp_split():
    frame = datasets.load("ccpp").iloc[:400][["AT", "V", "PE"]]
    return split_rows(frame, test_fraction=0.25, random_state=0)


@pytest.fixture(scope="module")
def ccpp_model(ccpp_split):
    train, _ = ccpp_split
    return FlowDensity(flow="spline", max_epochs=10, random_state=0).fit(train)


@pytest.fixture(scope="module")
def ccpp_evaluation(ccpp_model, ccpp_split):
    train, test = ccpp_split
    return evaluate(ccpp_model, test, train=train, bandwidths=BANDWIDTHS, random_state=0)


def test_split_rows_is_disjoint_and_reproducible():
    frame = datasets.load("old_faithful")
    train, test = split_rows(frame, test_fraction=0.25, random_state=4)
    again_train, again_test = split_rows(frame, test_fraction=0.25, random_state=4)
    rows = {tuple(r) for r in train.to_numpy()} | {tuple(r) for r in test.to_numpy()}

    assert len(test) == 68
    assert len(train) == 204
    assert test.equals(again_test)
    assert train.equals(again_train)
    assert rows == {tuple(r) for r in frame.to_numpy()}


@pytest.mark.parametrize("fraction", [0.0, 1.0, 0.001])
def test_split_rows_rejects_empty_parts(fraction):
    with pytest.raises(ValueError):
        split_rows(datasets.load("galaxies"), test_fraction=fraction)


def test_flow_row_matches_score_samples(ccpp_evaluation, ccpp_model, ccpp_split):
    _, test = ccpp_split
    flow = ccpp_evaluation["flow"]

    np.testing.assert_array_equal(flow.log_likelihoods, ccpp_model.score_samples(test))
    assert flow.description == "flow (spline)"


def test_gaussian_matches_sklearn(ccpp_evaluation, ccpp_split):
    train, test = ccpp_split
    # EmpiricalCovariance.score is the mean Gaussian log-likelihood in the data's units.
    expected = EmpiricalCovariance().fit(train).score(test)

    assert ccpp_evaluation["gaussian"].mean == pytest.approx(expected, rel=1e-9)


def test_mixture_matches_sklearn(ccpp_evaluation, ccpp_split):
    train, test = ccpp_split
    scaler = StandardScaler().fit(train)
    u_train, u_test = scaler.transform(train), scaler.transform(test)
    # One BLAS thread, as in evaluate: threaded BLAS on these 3 x 3 matrices is slow.
    with threadpool_limits(limits=1, user_api="blas"):
        fits = [
            GaussianMixture(k, covariance_type="full", random_state=0).fit(u_train)
            for k in range(1, 11)
        ]
    best = min(fits, key=lambda mixture: mixture.bic(u_train))
    expected = best.score_samples(u_test) - np.log(scaler.scale_).sum()
    result = ccpp_evaluation["gaussian_mixture"]

    assert f"{best.n_components} component" in result.description
    np.testing.assert_allclose(result.log_likelihoods, expected, rtol=1e-6)


def test_kernel_density_matches_sklearn(ccpp_evaluation, ccpp_split):
    train, test = ccpp_split
    scaler = StandardScaler().fit(train)
    search = GridSearchCV(
        KernelDensity(), {"bandwidth": BANDWIDTHS}, cv=KFold(5, shuffle=True, random_state=0)
    ).fit(scaler.transform(train))
    expected = search.best_estimator_.score_samples(scaler.transform(test))
    expected -= np.log(scaler.scale_).sum()
    result = ccpp_evaluation["kernel_density"]

    assert f"bandwidth {search.best_params_['bandwidth']:.3g}" in result.description
    np.testing.assert_allclose(result.log_likelihoods, expected, rtol=1e-6)


def test_summary_numbers_follow_per_row_values(ccpp_evaluation):
    for score in ccpp_evaluation.scores:
        values = score.log_likelihoods
        standard_error = values.std(ddof=1) / math.sqrt(values.size)

        assert score.mean == pytest.approx(values.mean())
        assert score.standard_error == pytest.approx(standard_error)
        assert score.bits_per_dim == pytest.approx(-values.mean() / (3 * math.log(2)))
        assert score.bits_per_dim_error == pytest.approx(standard_error / (3 * math.log(2)))


def test_difference_uses_paired_rows(ccpp_evaluation):
    flow, kde = ccpp_evaluation["flow"], ccpp_evaluation["kernel_density"]
    delta, error = kde.difference(flow)
    paired = kde.log_likelihoods - flow.log_likelihoods

    assert delta == pytest.approx(paired.mean())
    assert error == pytest.approx(paired.std(ddof=1) / math.sqrt(paired.size))


def test_evaluation_dict_is_json(ccpp_evaluation):
    record = json.loads(json.dumps(ccpp_evaluation.to_dict(), allow_nan=False))
    names = [row["name"] for row in record["models"]]

    assert names == ["flow", "gaussian", "gaussian_mixture", "kernel_density"]
    assert record["n_test"] == 100
    assert record["n_train"] == 300
    assert record["columns"] == ["AT", "V", "PE"]
    assert "minus_flow" not in record["models"][0]
    assert record["models"][1]["minus_flow"] is not None


def test_table_lists_every_model(ccpp_evaluation):
    table = ccpp_evaluation.format_table()

    for score in ccpp_evaluation.scores:
        assert score.description in table
    assert "held-out rows: 100" in table
    assert "bits/dim" in table


def test_cell_integral_matches_normal_cdf():
    u = np.array([[-1.3], [0.0], [0.4], [2.5]])
    step = np.array([0.5])
    expected = np.log(stats.norm.cdf(u + 0.25) - stats.norm.cdf(u - 0.25)) - np.log(0.5)
    result = _cell_log_prob(stats.norm.logpdf, u, step)

    np.testing.assert_allclose(result, expected[:, 0], atol=1e-4)


def test_baselines_on_counts_stay_probabilities():
    # On integer data with few values, every model's score is the log of a
    # probability mass, so it cannot exceed 0; a density evaluated at the integers
    # could, because a mixture component can collapse onto a single value.
    rng = np.random.default_rng(0)
    counts = rng.poisson(1.5, (500, 1)).astype(float)
    train, test = counts[:400], counts[400:]
    model = FlowDensity(flow="spline", max_epochs=15, random_state=0).fit(train)
    result = evaluate(model, test, train=train, bandwidths=BANDWIDTHS)

    assert model.grid_[0] == 1.0
    for score in result.scores:
        assert np.all(score.log_likelihoods <= 1e-9), score.name


def test_evaluate_rejects_too_few_training_rows(ccpp_model, ccpp_split):
    train, test = ccpp_split
    with pytest.raises(DataError, match="at least 10 training rows"):
        evaluate(ccpp_model, test, train=train.iloc[:6])


@pytest.mark.parametrize(
    ("options", "message"),
    [({"max_components": 0}, "max_components"), ({"cv": 1}, "cv must be at least 2")],
)
def test_evaluate_rejects_invalid_options(ccpp_model, ccpp_split, options, message):
    train, test = ccpp_split
    with pytest.raises(ValueError, match=message):
        evaluate(ccpp_model, test, train=train, **options)


# -- command line ------------------------------------------------------------------


@pytest.fixture(scope="module")
def faithful_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("evaluate")
    train, test = split_rows(datasets.load("old_faithful"), test_fraction=0.25, random_state=0)
    train.to_csv(folder / "train.csv", index=False)
    test.to_csv(folder / "test.csv", index=False)
    FlowDensity(flow="spline", max_epochs=10, random_state=0).fit(train).save(
        folder / "model.flowfit"
    )
    return folder


def test_cli_evaluate_with_train_file(faithful_files):
    folder = faithful_files
    result = CliRunner().invoke(app, [
        "evaluate", str(folder / "model.flowfit"), str(folder / "test.csv"),
        "--train", str(folder / "train.csv"), "--json", str(folder / "table.json"),
    ])
    record = json.loads((folder / "table.json").read_text())

    assert result.exit_code == 0, result.output
    assert "GaussianMixture" in result.output
    assert "KernelDensity" in result.output
    assert record["n_test"] == 68
    assert record["n_train"] == 204
    assert record["train"] == str(folder / "train.csv")
    assert len(record["models"]) == 4


def test_cli_evaluate_json_to_stdout_splits_data(faithful_files):
    folder = faithful_files
    result = CliRunner().invoke(app, [
        "evaluate", str(folder / "model.flowfit"), str(folder / "test.csv"),
        "--test-fraction", "0.5", "--seed", "1", "--json", "-",
    ])
    record = json.loads(result.stdout)

    assert result.exit_code == 0, result.output
    assert record["n_test"] == 34
    assert record["test_fraction"] == 0.5
    assert "held out 34 of 68 rows" in result.stderr


def test_cli_evaluate_rejects_both_split_options(faithful_files):
    folder = faithful_files
    result = CliRunner().invoke(app, [
        "evaluate", str(folder / "model.flowfit"), str(folder / "test.csv"),
        "--train", str(folder / "train.csv"), "--test-fraction", "0.2",
    ])

    assert result.exit_code == 1
    assert "exclude each other" in result.stderr


def test_cli_evaluate_keeps_existing_json(faithful_files):
    folder = faithful_files
    (folder / "old.json").write_text("{}")
    result = CliRunner().invoke(app, [
        "evaluate", str(folder / "model.flowfit"), str(folder / "test.csv"),
        "--train", str(folder / "train.csv"), "--json", str(folder / "old.json"),
    ])

    assert result.exit_code == 1
    assert "--force" in result.stderr
    assert (folder / "old.json").read_text() == "{}"
