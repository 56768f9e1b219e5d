"""FlowDensity and ConditionalFlowDensity: the scikit-learn API, weights, model files,
size selection, and held-out log-likelihood against classical density estimators."""

import json
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats
from sklearn.base import clone
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.neighbors import KernelDensity
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from typer.testing import CliRunner

from flowfit import ConditionalFlowDensity, DataError, FlowDensity, datasets
from flowfit.cli.app import app
from flowfit.errors import ModelFileError
from flowfit.training.loop import split_indices


def bimodal(n, seed=0):
    rng = np.random.default_rng(seed)
    return np.where(rng.random(n) < 0.5, rng.normal(-2.0, 0.5, n), rng.normal(2.0, 0.5, n))


def mixed_table(n=600, seed=0):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "loss": rng.lognormal(0.0, 1.0, n),
        "claims": rng.poisson(2.0, n).astype(float),
        "share": rng.beta(2.0, 5.0, n),
        "temperature": rng.normal(20.0, 5.0, n),
    })


# ---------------------------------------------------------------------------------
# Arrays, DataFrames and errors
# ---------------------------------------------------------------------------------


def test_dataframe_names_kept_in_samples():
    frame = mixed_table(300)
    model = FlowDensity(max_epochs=5, support={"share": (0.0, 1.0)}).fit(frame)
    samples = model.sample(50, random_state=0)

    assert list(model.feature_names_in_) == list(frame.columns)
    assert isinstance(samples, pd.DataFrame)
    assert list(samples.columns) == list(frame.columns)
    assert [c.name for c in model.columns_] == list(frame.columns)
    assert [c.kind for c in model.columns_] == ["positive", "positive", "bounded", "real"]


def test_array_fit_gives_array_samples():
    model = FlowDensity(max_epochs=5).fit(bimodal(200)[:, None])
    samples = model.sample(7, random_state=0)

    assert isinstance(samples, np.ndarray)
    assert samples.shape == (7, 1)
    assert not hasattr(model, "feature_names_in_")
    assert model.columns_[0].name == "x0"


def test_reordered_columns_rejected():
    frame = mixed_table(200)
    model = FlowDensity(max_epochs=2).fit(frame)
    with pytest.raises(ValueError, match="feature names should match"):
        model.score_samples(frame[frame.columns[::-1]])


def test_nan_error_names_rows_and_column():
    frame = mixed_table(100)
    frame.loc[[3, 7], "share"] = np.nan
    with pytest.raises(DataError, match=r"X contains NaN in column 'share', in 2 row\(s\), "
                                        r"first \[3, 7\]"):
        FlowDensity(max_epochs=2).fit(frame)


def test_infinite_value_error_names_column():
    x = bimodal(100)[:, None]
    model = FlowDensity(max_epochs=2).fit(x)
    x[5, 0] = np.inf
    with pytest.raises(DataError, match=r"infinite values \(inf\) in column 'x0'.*\[5\]"):
        model.score_samples(x)


def test_constant_column_error_and_drop():
    frame = mixed_table(200).assign(version=3.0)
    with pytest.raises(DataError, match="Column 'version' is constant"):
        FlowDensity(max_epochs=2).fit(frame)

    model = FlowDensity(max_epochs=2, constant_columns="drop").fit(frame)
    samples = model.sample(5, random_state=0)
    assert model.columns_[-1].dropped
    assert model.flow_.features == 4
    assert samples["version"].tolist() == [3.0] * 5
    assert np.all(np.isfinite(model.score_samples(frame)))


def test_invalid_parameter_rejected_in_fit():
    with pytest.raises(ValueError, match="max_epochs"):
        FlowDensity(max_epochs=0).fit(bimodal(50)[:, None])


def test_unknown_flow_option_rejected():
    with pytest.raises(ValueError, match="'spline' flow takes no option 'hidden'; its "
                                        "options are: layers, bins, bound"):
        FlowDensity(flow_options={"hidden": [8]}, max_epochs=2).fit(bimodal(50)[:, None])


def test_auto_flow_is_multivariate_for_tables():
    model = FlowDensity(max_epochs=2).fit(mixed_table(200))

    assert model.preset_ != "spline"
    assert model.flow_options_["hidden"] == [32, 32]


# ---------------------------------------------------------------------------------
# clone, pickling, Pipeline and GridSearchCV
# ---------------------------------------------------------------------------------


def test_clone_keeps_params_not_fit():
    model = FlowDensity(max_epochs=3, support={"share": (0.0, 1.0)}).fit(mixed_table(200))
    copy = clone(model)

    assert copy.get_params() == model.get_params()
    assert not hasattr(copy, "flow_")


def test_pickle_round_trip():
    frame = mixed_table(150)
    model = FlowDensity(max_epochs=5).fit(frame)
    restored = pickle.loads(pickle.dumps(model))

    assert np.array_equal(restored.score_samples(frame), model.score_samples(frame))
    assert restored.sample(20, random_state=3).equals(model.sample(20, random_state=3))


def test_grid_search_picks_by_held_out_likelihood():
    x = bimodal(600)[:, None]
    pipeline = make_pipeline(StandardScaler(), FlowDensity(max_epochs=80))
    search = GridSearchCV(pipeline, {"flowdensity__flow": ["shift", "spline"]}, cv=3)
    search.fit(x)
    scores = search.cv_results_["mean_test_score"]

    # Held-out log-likelihood of the first split, recomputed by hand.
    train, test = next(KFold(3).split(x))
    refit = clone(pipeline).set_params(flowdensity__flow="spline").fit(x[train])
    by_hand = refit.score(x[test])
    print(f"mean held-out log-likelihood per fold: shift {scores[0]:.1f}, "
          f"spline {scores[1]:.1f}")

    assert search.best_params_ == {"flowdensity__flow": "spline"}
    assert scores[1] > scores[0] + 50
    assert math.isclose(search.cv_results_["split0_test_score"][1], by_hand, rel_tol=1e-6)


# ---------------------------------------------------------------------------------
# Sample weights
# ---------------------------------------------------------------------------------


def test_zero_weights_equal_removed_rows():
    x = bimodal(400)[:, None]
    weight = np.ones(400)
    weight[::4] = 0.0
    weighted = FlowDensity(max_epochs=10).fit(x, sample_weight=weight)
    removed = FlowDensity(max_epochs=10).fit(x[weight > 0])

    assert np.array_equal(weighted.score_samples(x), removed.score_samples(x))


def test_weighted_fit_matches_weighted_gaussian():
    rng = np.random.default_rng(1)
    x = rng.normal(0.0, 1.0, 500)[:, None]
    weight = np.exp(x[:, 0])  # tilts N(0, 1) towards N(1, 1)
    model = FlowDensity(flow="affine", batch_size=None, learning_rate=0.05, max_epochs=400,
                        val_fraction=0.0, dtype="float64").fit(x, sample_weight=weight)
    mean = np.average(x[:, 0], weights=weight)
    std = math.sqrt(np.average((x[:, 0] - mean) ** 2, weights=weight))
    grid = np.linspace(-2.0, 4.0, 13)[:, None]

    assert mean > 0.8
    assert np.allclose(model.score_samples(grid), stats.norm.logpdf(grid[:, 0], mean, std),
                       atol=1e-4)


def test_validation_loss_is_weighted():
    rng = np.random.default_rng(2)
    x = rng.normal(0.0, 1.0, 400)[:, None]
    weight = rng.uniform(0.1, 3.0, 400)
    model = FlowDensity(flow="affine", max_epochs=30, val_fraction=0.25,
                        dtype="float64").fit(x, sample_weight=weight)

    # The estimator seeds the training loop this way, and the loop draws its split first.
    seed = int(np.random.RandomState(0).randint(np.iinfo(np.int32).max))
    _, val_idx = split_indices(400, 0.25, torch.Generator().manual_seed(seed))
    val_idx = val_idx.numpy()
    log_prob = model.score_samples(x[val_idx])
    weighted_nll = -np.average(log_prob, weights=weight[val_idx])

    assert math.isclose(min(model.history_.val), weighted_nll, rel_tol=1e-9)
    assert not math.isclose(-log_prob.mean(), weighted_nll, rel_tol=1e-3)


# ---------------------------------------------------------------------------------
# Model size selection
# ---------------------------------------------------------------------------------


def test_select_size_keeps_best_validation_candidate():
    frame = datasets.load("old_faithful")
    model = FlowDensity(select_size=True, max_epochs=15).fit(frame)
    scores = [c["val_log_likelihood"] for c in model.size_search_]

    assert len(model.size_search_) == 3
    assert model.flow_options_ == model.size_search_[int(np.argmax(scores))]["options"]
    assert math.isclose(-min(model.history_.val), max(scores))


def test_select_size_needs_validation_rows():
    with pytest.raises(ValueError, match="needs val_fraction > 0"):
        FlowDensity(select_size=True, val_fraction=0.0).fit(bimodal(50)[:, None])


# ---------------------------------------------------------------------------------
# Model files and flowfit inspect
# ---------------------------------------------------------------------------------


def test_save_load_keeps_columns_and_scores(tmp_path):
    frame = mixed_table(300).assign(version=3.0)
    model = FlowDensity(max_epochs=5, support={"share": (0.0, 1.0)},
                        constant_columns="drop").fit(frame)
    path = tmp_path / "mixed.flowfit"
    model.save(path)
    loaded = FlowDensity.load(path)
    probe = pd.concat([frame.head(20), frame.head(1).assign(share=1.5)])

    assert loaded.columns_ == model.columns_
    assert loaded.get_params() == model.get_params()
    assert loaded.tails_ == model.tails_
    assert np.array_equal(loaded.score_samples(probe), model.score_samples(probe))
    assert loaded.score_samples(probe)[-1] == -math.inf
    assert loaded.sample(10, random_state=1).equals(model.sample(10, random_state=1))


def test_save_load_keeps_tail_choice(tmp_path):
    heavy = np.random.default_rng(0).standard_t(2.0, size=(2000, 1))
    model = FlowDensity(max_epochs=2).fit(heavy)
    path = tmp_path / "heavy.flowfit"
    model.save(path)

    assert model.tails_.startswith("Student's t base; Hill tail indices below 4")
    assert FlowDensity.load(path).tails_ == model.tails_


def test_inspect_prints_column_choices(tmp_path):
    frame = mixed_table(300).assign(version=3.0)
    path = tmp_path / "mixed.flowfit"
    FlowDensity(max_epochs=3, support={"share": (0.0, 1.0)},
                constant_columns="drop").fit(frame).save(path)
    result = CliRunner().invoke(app, ["inspect", str(path)])
    lines = {line.split()[0]: line for line in result.output.splitlines() if line}

    assert result.exit_code == 0, result.output
    assert "log(x - low)" in lines["loss"]
    assert "positive" in lines["claims"]
    assert "logit((x - low) / (high - low))" in lines["share"]
    assert "dropped" in lines["version"]
    assert "constant (every value is 3)" in lines["version"]


def test_inspect_json_lists_records(tmp_path):
    path = tmp_path / "m.flowfit"
    FlowDensity(max_epochs=3).fit(mixed_table(200)).save(path)
    result = CliRunner().invoke(app, ["inspect", str(path), "--json"])
    facts = json.loads(result.output)

    assert result.exit_code == 0, result.output
    assert [c["name"] for c in facts["columns"]] == ["loss", "claims", "share", "temperature"]
    assert facts["columns"][1]["step"] == 1.0


def test_inspect_missing_file_fails_cleanly(tmp_path):
    result = CliRunner().invoke(app, ["inspect", str(tmp_path / "none.flowfit")])

    assert result.exit_code == 1
    assert "not found" in result.output


# ---------------------------------------------------------------------------------
# ConditionalFlowDensity
# ---------------------------------------------------------------------------------


def heteroscedastic(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2.0, 2.0, (n, 1))
    scale = 0.3 + 0.2 * (x[:, 0] + 2.0)
    y = 2.0 * x[:, 0] + scale * rng.normal(size=n)
    return x, y, scale


def test_conditional_matches_true_density():
    x, y, _ = heteroscedastic(1500)
    x_test, y_test, scale_test = heteroscedastic(1000, seed=1)
    model = ConditionalFlowDensity(random_state=0).fit(x, y)
    truth = stats.norm.logpdf(y_test, 2.0 * x_test[:, 0], scale_test)
    flow_score = model.score_samples(x_test, y_test).mean()
    marginal = FlowDensity(random_state=0).fit(y[:, None]).score_samples(y_test[:, None]).mean()
    print(f"held-out mean log-likelihood: conditional flow {flow_score:.4f}, "
          f"true {truth.mean():.4f}, flow on y alone {marginal:.4f}")

    assert model.preset_ != "spline"
    assert flow_score > truth.mean() - 0.1
    assert flow_score > marginal + 1.0


def test_conditional_samples_follow_context():
    x, y, _ = heteroscedastic(1000)
    model = ConditionalFlowDensity(max_epochs=60, random_state=0).fit(x, y)
    rows = np.array([[-1.5], [0.0], [1.5]])
    samples = model.sample(rows, n_samples=400, random_state=0)

    assert samples.shape == (3, 400)
    assert np.allclose(samples.mean(axis=1), 2.0 * rows[:, 0], atol=0.25)


def test_conditional_multi_target_shapes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(300, 2))
    y = pd.DataFrame({"a": x[:, 0] + rng.normal(size=300), "b": rng.lognormal(size=300)})
    model = ConditionalFlowDensity(max_epochs=3).fit(x, y)

    assert model.sample(x[:4], n_samples=5).shape == (4, 5, 2)
    assert model.target_names_ == ["a", "b"]
    assert model.columns_[1].kind == "positive"
    assert model.score_samples(x[:2], np.array([[0.0, -1.0], [0.0, 1.0]]))[0] == -math.inf


def test_conditional_save_load(tmp_path):
    x, y, _ = heteroscedastic(300)
    model = ConditionalFlowDensity(max_epochs=3).fit(x, y)
    path = tmp_path / "conditional.flowfit"
    model.save(path)
    loaded = ConditionalFlowDensity.load(path)
    result = CliRunner().invoke(app, ["inspect", str(path)])

    assert np.array_equal(loaded.score_samples(x, y), model.score_samples(x, y))
    assert "targets:" in result.output
    with pytest.raises(ModelFileError, match="contains a ConditionalFlowDensity"):
        FlowDensity.load(path)


def test_conditional_requires_y():
    with pytest.raises(ValueError, match="requires y"):
        ConditionalFlowDensity().fit(np.zeros((10, 1)), None)


# ---------------------------------------------------------------------------------
# Held-out log-likelihood against GaussianMixture and KernelDensity
# ---------------------------------------------------------------------------------


def gaussian_mixture_by_bic(train, max_components=8):
    fits = [GaussianMixture(k, random_state=0).fit(train) for k in range(1, max_components + 1)]
    return min(fits, key=lambda mixture: mixture.bic(train))


def kernel_density_by_cv(train):
    # One bandwidth for standardised columns; the log of the scales converts the
    # density back to the data's units.
    scaler = StandardScaler().fit(train)
    bandwidths = {"bandwidth": np.logspace(-1.5, 0.5, 20)}
    search = GridSearchCV(KernelDensity(), bandwidths, cv=5).fit(scaler.transform(train))
    log_jacobian = np.log(scaler.scale_).sum()
    return lambda rows: search.best_estimator_.score_samples(scaler.transform(rows)) - log_jacobian


def held_out_scores(name):
    table = datasets.load(name).to_numpy()
    totals = {"flow": [], "gaussian_mixture": [], "kernel_density": []}
    for train, test in KFold(3, shuffle=True, random_state=0).split(table):
        totals["flow"].append(FlowDensity().fit(table[train]).score_samples(table[test]))
        mixture = gaussian_mixture_by_bic(table[train])
        totals["gaussian_mixture"].append(mixture.score_samples(table[test]))
        totals["kernel_density"].append(kernel_density_by_cv(table[train])(table[test]))
    means = {key: float(np.concatenate(values).mean()) for key, values in totals.items()}
    print(f"{name}: 3-fold held-out mean log-likelihood, nats per row: " + ", ".join(
        f"{key} {value:.4f}" for key, value in means.items()))
    return means


@pytest.mark.parametrize(
    "name",
    [
        "galaxies",
        "danish_fire",
        pytest.param("old_faithful", marks=pytest.mark.xfail(
            strict=True,
            reason="With 181 training rows per fold, the default flow scores about -4.30 "
                   "nats per row, GaussianMixture -4.24 and KernelDensity -4.21; no "
                   "size, learning rate or patience we tried closed the gap",
        )),
    ],
)
def test_defaults_beat_classical_estimators(name):
    means = held_out_scores(name)

    assert means["flow"] > means["gaussian_mixture"]
    assert means["flow"] > means["kernel_density"]
