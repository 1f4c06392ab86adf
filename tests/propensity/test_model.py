"""Training, quality gate, scoring and persistence on simulated, leak-free features."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
import skops.io
from propensity.model import QualityGateError, feature_columns, load_model, quality_gate, save_model, score, train
from propensity.simulation import HISTORY_DAYS, make_population, true_propensity

from tests.propensity import events_frame, expected_features, simulate_history

START = date(2026, 1, 1)
RUN_DATE = START + timedelta(days=HISTORY_DAYS)
LABEL_WINDOW_DAYS = 14
AS_OF = RUN_DATE - timedelta(days=LABEL_WINDOW_DAYS)
SEED = 42


@pytest.fixture(scope="module")
def features() -> pd.DataFrame:
    """A training set as featurize.sql builds it, with each user's true propensity alongside."""
    population = make_population(seed=5, size=40_000, start=START)
    events = events_frame(simulate_history(population, RUN_DATE, HISTORY_DAYS))
    frame = expected_features(events, AS_OF, [7, 30, 90], LABEL_WINDOW_DAYS)
    truth = pd.Series(true_propensity(population, AS_OF, LABEL_WINDOW_DAYS), index=population.userid.to_pylist())
    return frame.assign(as_of_date=AS_OF, true_propensity=truth.reindex(frame.index)).reset_index()


@pytest.fixture(scope="module")
def trained(features):
    return train(features, seed=SEED, true_propensity_col="true_propensity")


def test_model_is_good_and_close_to_the_best_achievable(trained):
    metrics = trained.metrics
    assert metrics["roc_auc"] > 0.75
    assert metrics["ceiling_roc_auc"] - metrics["roc_auc"] < 0.1
    assert metrics["roc_auc"] > metrics["baseline_roc_auc"] - 0.02
    assert metrics["lift_top_decile"] > 2
    assert 0 < metrics["brier"] < 0.1 and metrics["log_loss"] > 0 and 0 < metrics["pr_auc"] < 1


def test_metrics_record_the_split(trained, features):
    metrics = trained.metrics
    assert metrics["rows"] == len(features) == metrics["train_rows"] + metrics["holdout_rows"]
    assert metrics["holdout_rows"] == pytest.approx(0.2 * len(features), abs=1)
    assert metrics["positives"] == features["label"].sum()
    assert metrics["seed"] == SEED
    assert metrics["features"] == trained.features


def test_only_feature_columns_are_inputs(trained, features):
    assert trained.features == feature_columns(features)
    leaky = {"userid", "as_of_date", "label", "true_propensity", "eventType", "timestamp"}
    assert not leaky & set(trained.features)
    assert all(column.startswith(("cnt_", "days_since_", "has_")) for column in trained.features)
    with pytest.raises(ValueError, match="no feature columns"):
        feature_columns(features[["userid", "as_of_date", "label"]])


def test_training_is_deterministic(trained, features):
    again = train(features, seed=SEED, true_propensity_col="true_propensity")
    assert again.metrics == trained.metrics


def test_training_needs_both_classes(features):
    with pytest.raises(ValueError, match="both classes"):
        train(features.assign(label=0))


def test_quality_gate(trained):
    quality_gate(trained.metrics, min_auc=0.7)
    with pytest.raises(QualityGateError, match="below the quality gate"):
        quality_gate(trained.metrics, min_auc=trained.metrics["roc_auc"] + 0.01)


def test_scores_one_row_per_user_with_version_and_time(trained, features):
    scoring_set = features.drop(columns=["label", "true_propensity"])
    scored_at = datetime(2026, 3, 12, 6, 0, tzinfo=UTC)
    scores = score(trained, scoring_set, model_version="m-2026-03-12", scored_at=scored_at)
    assert list(scores.columns) == ["userid", "propensity", "model_version", "scored_at"]
    assert scores["userid"].tolist() == scoring_set["userid"].tolist()
    assert scores["propensity"].between(0, 1).all() and scores["propensity"].nunique() > 100
    assert (scores["model_version"] == "m-2026-03-12").all() and (scores["scored_at"] == scored_at).all()
    with pytest.raises(ValueError, match="duplicate users"):
        score(trained, pd.concat([scoring_set, scoring_set.head(1)]), model_version="v", scored_at=scored_at)
    with pytest.raises(ValueError, match="lacks the model's features"):
        score(trained, scoring_set.drop(columns=trained.features[0]), model_version="v", scored_at=scored_at)


def test_save_and_load_round_trip(trained, features):
    restored = load_model(save_model(trained))
    assert restored.features == trained.features
    assert restored.metrics == trained.metrics
    inputs = features[trained.features].astype(float)
    np.testing.assert_array_equal(restored.estimator.predict_proba(inputs), trained.estimator.predict_proba(inputs))


class Payload:
    """Not a scikit-learn or numpy type: a model file holding it must not load."""


def test_load_refuses_foreign_types():
    with pytest.raises(ValueError, match="outside"):
        load_model(skops.io.dumps({"estimator": Payload(), "features": [], "metrics": {}}))
