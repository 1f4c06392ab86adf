"""Train, evaluate, gate, persist and apply the subscription-propensity model.

Input is the featurization output (``include/sql/featurize.sql``): one row per ``(userid,
as_of_date)``. Only the feature columns it defines (``cnt_*``, ``days_since_*``, ``has_*``) are
ever used as inputs: ids, dates, timestamps and ``eventType`` never are (docs/reference-notes.md#m1).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import skops.io
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score
from sklearn.model_selection import GroupShuffleSplit
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

log = logging.getLogger(__name__)

FEATURE_PREFIXES = ("cnt_", "days_since_", "has_")
USER_COLUMN = "userid"
HOLDOUT_FRACTION = 0.2
TRUSTED_TYPE_PREFIXES = ("sklearn.", "numpy.")
"""Types ``load_model`` lets skops rebuild; anything else in a model file is refused."""


class QualityGateError(RuntimeError):
    """The trained model is not good enough to score with."""


@dataclass(frozen=True)
class TrainedModel:
    """A fitted pipeline, the feature columns it expects (in order) and its holdout metrics.

    :param estimator: the fitted scikit-learn pipeline.
    :param features: input column names.
    :param metrics: holdout metrics and training facts (see ``train``).
    """

    estimator: Pipeline
    features: list[str]
    metrics: dict[str, Any]


def feature_columns(frame: pd.DataFrame) -> list[str]:
    """The model inputs among ``frame``'s columns: the featurization's feature columns only.

    :param frame: a featurization output.
    """
    columns = [column for column in frame.columns if column.startswith(FEATURE_PREFIXES)]
    if not columns:
        raise ValueError(f"no feature columns (prefixes {FEATURE_PREFIXES}) in {list(frame.columns)}")
    return columns


def train(
    features: pd.DataFrame, label_col: str = "label", *, seed: int = 0, true_propensity_col: str | None = None
) -> TrainedModel:
    """Fit gradient boosting on 80% of the users and evaluate it on the other 20%.

    Metrics: ``roc_auc``, ``pr_auc``, ``log_loss``, ``brier``, ``lift_top_decile`` (positive rate
    in the top-scored 10% over the holdout's rate), ``baseline_roc_auc`` (scaled logistic
    regression), ``ceiling_roc_auc`` (the true propensities' AUC on the same holdout, when
    ``true_propensity_col`` is given, else None), ``rows``, ``positives``, ``train_rows``,
    ``holdout_rows``, ``features``, ``seed``.

    :param features: featurization output with labels.
    :param label_col: the 0/1 label column.
    :param seed: seed of the split and the models; recorded in the metrics.
    :param true_propensity_col: column with the simulator's true propensities, if known.
    """
    # Row order (an export's part order) must not change the split or the fit: sort by user first.
    features = features.sort_values(USER_COLUMN, kind="stable").reset_index(drop=True)
    columns = feature_columns(features)
    inputs = features[columns].astype(float)
    labels = features[label_col].astype(int).to_numpy()
    if np.unique(labels).size < 2:
        raise ValueError(f"{label_col!r} needs both classes to train; got {np.unique(labels).tolist()}")
    # Grouped by user: the same user never sits on both sides, even with several as-of dates.
    splitter = GroupShuffleSplit(n_splits=1, test_size=HOLDOUT_FRACTION, random_state=seed)
    train_rows, holdout_rows = next(splitter.split(inputs, labels, groups=features[USER_COLUMN]))
    estimator = _gradient_boosting(seed).fit(inputs.iloc[train_rows], labels[train_rows])
    baseline = _logistic_baseline(seed).fit(inputs.iloc[train_rows], labels[train_rows])
    holdout_labels = labels[holdout_rows]
    scores = estimator.predict_proba(inputs.iloc[holdout_rows])[:, 1]
    ceiling = None
    if true_propensity_col is not None:
        ceiling = float(roc_auc_score(holdout_labels, features[true_propensity_col].to_numpy()[holdout_rows]))
    metrics = {
        "roc_auc": float(roc_auc_score(holdout_labels, scores)),
        "pr_auc": float(average_precision_score(holdout_labels, scores)),
        "log_loss": float(log_loss(holdout_labels, scores, labels=[0, 1])),
        "brier": float(brier_score_loss(holdout_labels, scores)),
        "lift_top_decile": _lift_top_decile(holdout_labels, scores),
        "baseline_roc_auc": float(
            roc_auc_score(holdout_labels, baseline.predict_proba(inputs.iloc[holdout_rows])[:, 1])
        ),
        "ceiling_roc_auc": ceiling,
        "rows": int(len(features)),
        "positives": int(labels.sum()),
        "train_rows": int(len(train_rows)),
        "holdout_rows": int(len(holdout_rows)),
        "features": columns,
        "seed": seed,
    }
    log.info(
        "trained on %s rows (%s positives): ROC AUC %.3f, baseline %.3f, ceiling %s",
        metrics["rows"],
        metrics["positives"],
        metrics["roc_auc"],
        metrics["baseline_roc_auc"],
        ceiling,
    )
    return TrainedModel(estimator=estimator, features=columns, metrics=metrics)


def quality_gate(metrics: dict[str, Any], min_auc: float) -> None:
    """Raise ``QualityGateError`` when the holdout ROC AUC is below ``min_auc``.

    :param metrics: the metrics from ``train``.
    :param min_auc: the lowest acceptable ROC AUC.
    """
    if metrics["roc_auc"] < min_auc:
        raise QualityGateError(
            f"holdout ROC AUC {metrics['roc_auc']:.3f} is below the quality gate {min_auc:.3f} "
            f"(baseline {metrics['baseline_roc_auc']:.3f}, {metrics['rows']} rows, {metrics['positives']} positives)"
        )


def score(model: TrainedModel, features: pd.DataFrame, *, model_version: str, scored_at: datetime) -> pd.DataFrame:
    """Propensities for a scoring set: columns ``userid, propensity, model_version, scored_at``.

    :param model: the trained model.
    :param features: featurization output (scoring mode), one row per user.
    :param model_version: recorded on every score (docs/reference-notes.md#m11).
    :param scored_at: the run's scoring timestamp, passed in so reruns are reproducible.
    """
    duplicated = features[USER_COLUMN].duplicated()
    if duplicated.any():
        raise ValueError(f"{int(duplicated.sum())} duplicate users in the scoring set; expected one row per user")
    missing = sorted(set(model.features) - set(features.columns))
    if missing:
        raise ValueError(f"scoring set lacks the model's features {missing}")
    propensity = model.estimator.predict_proba(features[model.features].astype(float))[:, 1]
    return pd.DataFrame(
        {
            USER_COLUMN: features[USER_COLUMN].to_numpy(),
            "propensity": propensity,
            "model_version": model_version,
            "scored_at": scored_at,
        }
    )


def save_model(model: TrainedModel) -> bytes:
    """Serialize with skops (no pickle): the pipeline, its features and its metrics.

    :param model: the trained model.
    """
    return skops.io.dumps({"estimator": model.estimator, "features": model.features, "metrics": model.metrics})


def load_model(data: bytes) -> TrainedModel:
    """Rebuild a model from ``save_model`` bytes, trusting only scikit-learn and numpy types.

    :param data: the serialized model.
    """
    untrusted = skops.io.get_untrusted_types(data=data)
    refused = [name for name in untrusted if not name.startswith(TRUSTED_TYPE_PREFIXES)]
    if refused:
        raise ValueError(f"model file contains types outside {TRUSTED_TYPE_PREFIXES}: {refused}")
    content = skops.io.loads(data, trusted=untrusted)
    return TrainedModel(estimator=content["estimator"], features=content["features"], metrics=content["metrics"])


def _gradient_boosting(seed: int) -> Pipeline:
    # NaN-aware: "never happened" (NULL days_since_*) stays missing instead of becoming 0 (docs/reference-notes.md#m3).
    # Shallow, regularised trees: positives are a few percent of sparse count data.
    return make_pipeline(
        HistGradientBoostingClassifier(
            learning_rate=0.05,
            max_iter=300,
            max_leaf_nodes=15,
            min_samples_leaf=100,
            l2_regularization=1.0,
            early_stopping=True,
            random_state=seed,
        )
    )


def _logistic_baseline(seed: int) -> Pipeline:
    # Missing recency becomes the median plus an indicator column, then everything is scaled.
    return make_pipeline(
        SimpleImputer(strategy="median", add_indicator=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000, random_state=seed),
    )


def _lift_top_decile(labels: np.ndarray, scores: np.ndarray) -> float:
    top = np.argsort(-scores, kind="stable")[: max(1, len(scores) // 10)]
    return float(labels[top].mean() / labels.mean()) if labels.mean() > 0 else float("nan")
