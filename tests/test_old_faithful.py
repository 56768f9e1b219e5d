"""A spline flow on real rounded data: Old Faithful eruption durations."""

import numpy as np
import torch
from scipy import stats
from sklearn.model_selection import KFold

from flowfit import FlowDensity, datasets


def test_spline_beats_gaussian_in_kfold():
    x = datasets.load("old_faithful")[["eruptions"]].to_numpy()
    flow_scores, gauss_scores = [], []
    for train, test in KFold(5, shuffle=True, random_state=0).split(x):
        model = FlowDensity(flow="spline", max_epochs=150, random_state=0).fit(x[train])
        flow_scores.append(model.score_samples(x[test]).mean())
        mean, std = x[train].mean(), x[train].std()
        gauss_scores.append(stats.norm.logpdf(x[test, 0], mean, std).mean())
    print(f"5-fold held-out mean log-likelihood: spline {np.mean(flow_scores):.4f}, "
          f"Gaussian {np.mean(gauss_scores):.4f}")

    assert np.mean(flow_scores) > np.mean(gauss_scores) + 0.3


def test_spline_density_integrates_to_one():
    x = datasets.load("old_faithful")[["eruptions"]]
    model = FlowDensity(flow="spline", max_epochs=100, dtype="float64").fit(x)
    grid = np.linspace(-10.0, 20.0, 300_001)[:, None]
    density = np.exp(model.score_samples(grid))

    assert abs(np.trapezoid(density, grid[:, 0]) - 1.0) < 1e-3


def test_waiting_times_are_dequantised():
    x = datasets.load("old_faithful")[["waiting"]]
    model = FlowDensity(flow="spline", max_epochs=60).fit(x)
    whole_minutes = np.arange(20.0, 120.0)[:, None]
    mass = np.exp(model.score_samples(whole_minutes))

    assert model.grid_.tolist() == [1.0]
    assert abs(mass.sum() - 1.0) < 1e-3
    samples = model.sample(100, random_state=0)["waiting"].to_numpy()
    assert np.array_equal(samples, np.round(samples))
