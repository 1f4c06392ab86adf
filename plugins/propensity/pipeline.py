"""The propensity DAG's Python tasks and its fixed configuration, kept out of the DAG file.

The DAG file only wires tasks together; everything here is plain Python that takes the task
context (or the run plan, a small dict computed once per run) and reads or writes S3 and AEP.
"""

from __future__ import annotations

import io
import logging
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from propensity import artifacts
from propensity.dates import resolve_as_of_date
from propensity.events import REFERENCE_DAYS, TEMPLATE_PARAMS

if TYPE_CHECKING:
    import pandas as pd

    from propensity import simulation

log = logging.getLogger(__name__)

START_DATE = datetime(2026, 1, 1, tzinfo=UTC)
S3_CONN_ID = "aep_s3"
AEP_CONN_ID = "aep_default"
EXPORT_PATH = "propensity/exports"
ACTIVATION_PATH = "propensity/audiences"
ACTIVATION_DESTINATION = "propensity-audiences-s3"
EDA_QUERIES = ("row_counts", "event_funnel", "conversion_rate")
LOOKBACK_DAYS = [7, 30, 90]
HISTORY_BATCH_DAYS = 7
"""History is ingested in weekly batches (Profile-enabled datasets allow ~90 batches a day)."""

EXPERIENCE_EVENT = "https://ns.adobe.com/xdm/context/experienceevent"
PROFILE = "https://ns.adobe.com/xdm/context/profile"

EVENTS_DATASET = {
    "dataset": "propensity_experience_events",
    "schema": {
        "title": "Propensity experience events",
        "class": EXPERIENCE_EVENT,
        "field_groups": [
            "https://ns.adobe.com/xdm/context/experienceevent-web",
            "https://ns.adobe.com/xdm/context/experienceevent-directmarketing",
        ],
        "tenant_field_group": {"title": "Propensity event user", "fields": {"userid": "string"}},
    },
    "identity": {"field": "userid", "namespace": "ECID"},
    "profile_enabled": True,
}
PROFILES_DATASET = {
    "dataset": "propensity_profiles",
    "schema": {
        "title": "Propensity profiles",
        "class": PROFILE,
        "field_groups": [],
        "tenant_field_group": {
            "title": "Propensity profile attributes",
            "fields": {"userid": "string", "email": "string", "firstName": "string", "lastName": "string"},
        },
    },
    "identity": {"field": "userid", "namespace": "ECID"},
    "profile_enabled": True,
}
SCORES_DATASET = {
    "dataset": "propensity_scores",
    "schema": {
        "title": "Propensity scores",
        "class": PROFILE,
        "field_groups": [],
        "tenant_field_group": {
            "title": "Propensity score attributes",
            "fields": {
                "userid": "string",
                "propensity": "number",
                "propensityModelVersion": "string",
                "propensityScoredAt": "date-time",
                "propensityRunId": "string",
            },
        },
    },
    "identity": {"field": "userid", "namespace": "ECID"},
    "profile_enabled": True,
}


def dag_params(param: type) -> dict[str, Any]:
    """The DAG's params (the trigger form); ``param`` is ``airflow.sdk.Param``."""
    return {
        "as_of_date": param(
            None,
            type=["null", "string"],
            format="date",
            title="As-of date",
            description="Score as of this date (YYYY-MM-DD). Empty: the run's data interval.",
        ),
        "synthetic_data": param(
            True,
            type="boolean",
            title="Synthetic data",
            description="Simulate and ingest events (local and dev sandboxes). Off for a real org.",
        ),
        "profile_count": param(
            100_000,
            type="integer",
            minimum=100,
            maximum=5_000_000,
            title="Profiles",
            description="Size of the synthetic population (the reference used 100,000).",
        ),
        "seed": param(42, type="integer", title="Simulation seed"),
        "history_days": param(
            REFERENCE_DAYS,
            type="integer",
            minimum=14,
            maximum=365,
            description="Days of events seeded when the events dataset is empty.",
        ),
        "label_window_days": param(
            28,
            type="integer",
            minimum=1,
            maximum=90,
            description="A user is positive when they convert within this many days of the cut-off.",
        ),
        "min_auc": param(
            0.7,
            type="number",
            minimum=0.5,
            maximum=1.0,
            description="Quality gate: the run fails when the holdout ROC AUC is lower.",
        ),
        "force_retrain": param(False, type="boolean", description="Retrain even when this date already has a model."),
        "audience_tiers": param(
            {"high": 0.1, "medium": 0.3},
            type="object",
            title="Audience tiers",
            description="Each tier's reach as a cumulative share of the top-scored profiles: "
            "high = top 10 %, medium = the next 20 %.",
        ),
        "activate": param(True, type="boolean", description="Activate the audiences to the S3 destination."),
        "artifact_bucket": param(
            "aep-propensity", type="string", description="S3 bucket for models, scores and reports."
        ),
        "destination_bucket": param(
            "aep-destination", type="string", description="S3 bucket AEP exports datasets and audiences to."
        ),
    }


def _s3():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=S3_CONN_ID).get_conn()


def _aep():
    from aep_hooks.hooks import AEPHook

    return AEPHook(AEP_CONN_ID)


def plan_run(context: dict, *, events: dict, profiles: dict, scores: dict) -> dict[str, Any]:
    """Every date, name and location one run uses, computed once.

    :param context: the task context.
    :param events: ``AEPEnsureDatasetOperator`` output for the events dataset.
    :param profiles: the same for the profiles dataset.
    :param scores: the same for the scores dataset.
    """
    params = context["params"]
    as_of = resolve_as_of_date(context)
    label_days = int(params["label_window_days"])
    train_cutoff = as_of - timedelta(days=label_days)
    stamp = as_of.strftime("%Y%m%d")
    feature_base = {
        **TEMPLATE_PARAMS,
        "events_table": events["table_name"],
        "label_window_days": label_days,
        "lookback_days": LOOKBACK_DAYS,
    }
    return {
        "as_of": as_of.isoformat(),
        "event_day": (as_of - timedelta(days=1)).isoformat(),
        "train_cutoff": train_cutoff.isoformat(),
        "tenant": events["tenant_id"],
        "run_id": context["run_id"],
        "events_dataset_id": events["dataset_id"],
        "events_table": events["table_name"],
        "profiles_dataset_id": profiles["dataset_id"],
        "scores_dataset_id": scores["dataset_id"],
        "artifact_bucket": params["artifact_bucket"],
        "destination_bucket": params["destination_bucket"],
        "training_table": f"propensity_training_{stamp}",
        "scoring_table": f"propensity_scoring_{stamp}",
        "training_export_flow": f"propensity-training-export-{as_of.isoformat()}",
        "scoring_export_flow": f"propensity-scoring-export-{as_of.isoformat()}",
        "activation_destination": ACTIVATION_DESTINATION,
        "eda_vars": {
            **TEMPLATE_PARAMS,
            "events_table": events["table_name"],
            "start": (as_of - timedelta(days=int(params["history_days"]))).isoformat(),
            "end": as_of.isoformat(),
        },
        "training_features": {
            **feature_base,
            "output_table": f"propensity_training_{stamp}",
            "as_of": train_cutoff.isoformat(),
            "with_label": True,
        },
        "scoring_features": {
            **feature_base,
            "output_table": f"propensity_scoring_{stamp}",
            "as_of": as_of.isoformat(),
            "with_label": False,
        },
    }


def _skip_unless_synthetic(context: dict) -> None:
    if not context["params"]["synthetic_data"]:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException("synthetic_data is off: events come from the org's own sources")


def _population(s3, run: dict, params: dict) -> tuple[simulation.Population, date]:
    """The synthetic population of this events dataset, and the first day after its seeded history.

    The first run fixes both (its history starts ``history_days`` before its as-of date) and keeps
    them in S3, keyed by the events dataset, so every later run extends the same timeline.
    """
    from propensity import simulation  # heavy: imported at run time, not at DAG parse

    key = f"synthetic/{run['events_dataset_id']}/population.json"
    wanted = {"seed": int(params["seed"]), "size": int(params["profile_count"])}
    if artifacts.object_exists(s3, run["artifact_bucket"], key):
        stored = artifacts.read_json(s3, run["artifact_bucket"], key)
        if {k: stored[k] for k in wanted} != wanted:
            raise ValueError(
                f"events dataset {run['events_dataset_id']} was seeded with seed={stored['seed']} and "
                f"profile_count={stored['size']}, not {wanted}: run with those params, or wipe the local "
                "stack's data (bin/stack down; rm -r .local) to start a new population"
            )
    else:
        as_of = date.fromisoformat(run["as_of"])
        stored = {
            **wanted,
            "start": (as_of - timedelta(days=int(params["history_days"]))).isoformat(),
            "history_end": as_of.isoformat(),
        }
        artifacts.write_json(s3, run["artifact_bucket"], key, stored)
    population = simulation.make_population(wanted["seed"], wanted["size"], date.fromisoformat(stored["start"]))
    return population, date.fromisoformat(stored["history_end"])


def _synthetic_setup(context: dict, run: dict) -> tuple[dict, Any, str]:
    """``(params, s3 client, artifact bucket)`` for a synthetic-data task; skips it when synthetic data is off."""
    _skip_unless_synthetic(context)
    s3, bucket = _s3(), run["artifact_bucket"]
    # A local convenience: the stack creates the default bucket, a test or a backfill may name another.
    if bucket not in {b["Name"] for b in s3.list_buckets().get("Buckets", [])}:
        s3.create_bucket(Bucket=bucket)
    return context["params"], s3, bucket


def event_batches(start: date, history_end: date, as_of: date) -> list[list[date]]:
    """The days of each events batch a run at ``as_of`` is responsible for, in order.

    The seeded history ``[start, history_end - 1)`` is cut into weekly batches; every day from
    ``history_end - 1`` on is a batch of its own, ingested by the run the day after. So a day always
    belongs to the same batch, and a rerun of a date replays exactly that date's batch.

    :param start: the population's first day.
    :param history_end: the as-of date of the run that seeded the history.
    :param as_of: this run's as-of date.
    """
    last_history_day = history_end - timedelta(days=2)
    history = [start + timedelta(days=i) for i in range((last_history_day - start).days + 1)]
    batches = [history[i : i + HISTORY_BATCH_DAYS] for i in range(0, len(history), HISTORY_BATCH_DAYS)]
    event_day = as_of - timedelta(days=1)
    if event_day > last_history_day:
        batches.append([event_day])
    return batches


def batch_key(days: list[date]) -> str:
    """The batch identity (``as_of_date`` of the ingest task) of a run of days."""
    return days[0].isoformat() if len(days) == 1 else f"{days[0]}..{days[-1]}"


def generate_events(context: dict, run: dict) -> list[dict]:
    """Write the events of each batch this run must ingest to S3; one ``{as_of_date, s3_keys}`` per batch.

    The run's own day is always (re)ingested, so a rerun replays it; a history batch only while it
    has no successful batch yet (a first run that failed half-way is completed by its rerun).

    :param context: the task context.
    :param run: the run plan.
    """
    from propensity import simulation  # heavy: imported at run time, not at DAG parse

    params, s3, bucket = _synthetic_setup(context, run)
    population, history_end = _population(s3, run, params)
    as_of = date.fromisoformat(run["as_of"])
    ingested = {
        (doc.get("tags") or {}).get("airflow_as_of_date", [None])[0]
        for doc in _aep().find_batches(dataSet=run["events_dataset_id"], status="success").values()
    }
    planned = event_batches(population.start, history_end, as_of)
    todo = [days for days in planned if days == planned[-1] or batch_key(days) not in ingested]
    rows = 0
    for day in (day for days in todo for day in days):
        table = simulation.simulate_day(population, day, tenant=run["tenant"])
        artifacts.write_parquet(s3, bucket, artifacts.events_key(day), table)
        rows += table.num_rows
    log.info("stage=synthetic_data as_of=%s batches=%s rows=%s", as_of, [batch_key(d) for d in todo], rows)
    return [{"as_of_date": batch_key(days), "s3_keys": [artifacts.events_key(day) for day in days]} for days in todo]


def generate_profiles(context: dict, run: dict) -> list[str]:
    """Write the population's profile records and true propensities to S3; return the profile file key.

    :param context: the task context.
    :param run: the run plan.
    """
    from propensity import simulation  # heavy: imported at run time, not at DAG parse

    params, s3, bucket = _synthetic_setup(context, run)
    population, _ = _population(s3, run, params)
    as_of, tenant = date.fromisoformat(run["as_of"]), run["tenant"]
    truth = simulation.profiles_table(
        population, as_of=date.fromisoformat(run["train_cutoff"]), label_window_days=int(params["label_window_days"])
    )
    artifacts.write_parquet(s3, bucket, artifacts.truth_key(as_of), truth.select(["userid", "true_propensity"]))
    attributes = pa.StructArray.from_arrays(
        [
            truth["userid"].combine_chunks(),
            truth["email"].combine_chunks(),
            truth["first_name"].combine_chunks(),
            truth["last_name"].combine_chunks(),
        ],
        names=["userid", "email", "firstName", "lastName"],
    )
    profiles = pa.table({"_id": truth["userid"], f"_{tenant}": attributes})
    key = artifacts.profiles_key(as_of)
    artifacts.write_parquet(s3, bucket, key, profiles)
    return [key]


def write_eda_report(run: dict, results: dict[str, dict]) -> dict[str, Any]:
    """Turn the EDA queries' rows into ``reports/dt=…/eda.json``; return its headline numbers.

    :param run: the run plan.
    :param results: each EDA query's output (``{"rows", "rowCount"}``), by name.
    """
    ((events, users, first_at, last_at),) = results["row_counts"]["rows"]
    ((active, converted, rate),) = results["conversion_rate"]["rows"]
    funnel = [
        {"event_type": r[0], "funnel_position": r[1], "events": r[2], "users": r[3]}
        for r in results["event_funnel"]["rows"]
    ]
    report = {
        "as_of": run["as_of"],
        "window": [run["eda_vars"]["start"], run["eda_vars"]["end"]],
        "events": events,
        "users": users,
        "first_event_at": first_at,
        "last_event_at": last_at,
        "active_users": active,
        "converted_users": converted,
        "conversion_rate": rate,
        "funnel": funnel,
    }
    key = artifacts.report_key(date.fromisoformat(run["as_of"]))
    artifacts.write_json(_s3(), run["artifact_bucket"], key, report)
    log.info("stage=eda as_of=%s events=%s users=%s conversion_rate=%s", run["as_of"], events, users, rate)
    return {"report_key": key, "events": events, "users": users, "conversion_rate": rate}


def _read_export(s3, export: dict) -> pd.DataFrame:
    """Every part file of a dataset export (the run's own files), nested columns flattened."""
    from propensity import simulation  # heavy: imported at run time, not at DAG parse

    bucket = export["export_path"].removeprefix("s3://").split("/", 1)[0]
    if not export["files"]:
        raise ValueError(f"export {export['export_path']} has no files")
    tables = [
        pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read())) for key in export["files"]
    ]
    frame = simulation.flatten(pa.concat_tables(tables, promote_options="default")).to_pandas()
    if len(frame) != export["records"]:
        raise ValueError(
            f"export {export['export_path']} holds {len(frame)} rows, its run reported {export['records']}"
        )
    return frame


def train(context: dict, run: dict, training_export: dict) -> dict[str, Any]:
    """Train on the exported training set, gate on AUC, write the model and ``metrics.json``.

    A date that already has a model keeps it unless ``force_retrain`` is set.

    :param context: the task context.
    :param run: the run plan.
    :param training_export: the training set's export (``AEPDatasetExportOperator`` output).
    """
    from propensity import model  # heavy: imported at run time, not at DAG parse

    params, s3, bucket = context["params"], _s3(), run["artifact_bucket"]
    as_of = date.fromisoformat(run["as_of"])
    model_key, metrics_key = artifacts.model_key(as_of), artifacts.metrics_key(as_of)
    if not params["force_retrain"] and artifacts.object_exists(s3, bucket, metrics_key):
        log.info("stage=train as_of=%s model exists at %s: reused (force_retrain=false)", as_of, model_key)
        return artifacts.read_json(s3, bucket, metrics_key)
    features = _read_export(s3, training_export)
    truth_col = None
    if artifacts.object_exists(s3, bucket, artifacts.truth_key(as_of)):
        truth = artifacts.read_parquet(s3, bucket, artifacts.truth_key(as_of)).to_pandas()
        features = features.merge(truth, on="userid", how="left")
        truth_col = "true_propensity"
    trained = model.train(features, seed=int(params["seed"]), true_propensity_col=truth_col)
    version = f"{as_of.isoformat()}.{run['run_id']}"
    metrics = {
        **trained.metrics,
        "model_version": version,
        "model_key": f"s3://{bucket}/{model_key}",
        "training_export": training_export["export_path"],
        "min_auc": params["min_auc"],
    }
    try:
        model.quality_gate(metrics, float(params["min_auc"]))
    except model.QualityGateError as err:
        from airflow.sdk.exceptions import AirflowFailException

        artifacts.write_json(s3, bucket, f"models/dt={as_of.isoformat()}/rejected_metrics.json", metrics)
        raise AirflowFailException(f"{err}; the model was not published") from err
    s3.put_object(Bucket=bucket, Key=model_key, Body=model.save_model(trained))
    artifacts.write_json(s3, bucket, metrics_key, metrics)
    log.info(
        "stage=train as_of=%s rows=%s auc=%.4f ceiling=%s model_key=%s",
        as_of,
        metrics["rows"],
        metrics["roc_auc"],
        metrics["ceiling_roc_auc"],
        model_key,
    )
    return metrics


def score(context: dict, run: dict, scoring_export: dict, trained: dict) -> list[str]:
    """Score every profile of the scoring set into an XDM-shaped Parquet file; return its key.

    :param context: the task context.
    :param run: the run plan.
    :param scoring_export: the scoring set's export.
    :param trained: the training task's metrics (model key and version).
    """
    from propensity import model  # heavy: imported at run time, not at DAG parse

    s3, bucket = _s3(), run["artifact_bucket"]
    as_of = date.fromisoformat(run["as_of"])
    model_bucket, model_key = trained["model_key"].removeprefix("s3://").split("/", 1)
    fitted = model.load_model(s3.get_object(Bucket=model_bucket, Key=model_key)["Body"].read())
    # The scoring time is the cut-off the features describe: a rerun writes identical scores.
    scored_at = datetime.combine(as_of, datetime.min.time(), tzinfo=UTC)
    scores = model.score(
        fitted, _read_export(s3, scoring_export), model_version=trained["model_version"], scored_at=scored_at
    )
    tenant = run["tenant"]
    attributes = pa.StructArray.from_arrays(
        [
            pa.array(scores["userid"], pa.string()),
            pa.array(scores["propensity"], pa.float64()),
            pa.array(scores["model_version"], pa.string()),
            pa.array(scores["scored_at"], pa.timestamp("us", tz="UTC")),
            pa.array([run["run_id"]] * len(scores), pa.string()),
        ],
        names=["userid", "propensity", "propensityModelVersion", "propensityScoredAt", "propensityRunId"],
    )
    table = pa.table({"_id": pa.array(scores["userid"], pa.string()), f"_{tenant}": attributes})
    key = artifacts.scores_key(as_of)
    artifacts.write_parquet(s3, bucket, key, table)
    log.info(
        "stage=score as_of=%s profiles=%s model_version=%s key=%s", as_of, len(scores), trained["model_version"], key
    )
    return [key]


def audience_definitions(context: dict, run: dict, scores_keys: list[str]) -> list[dict[str, str]]:
    """One audience per score tier, with propensity floors read off this run's score distribution.

    ``audience_tiers`` maps a tier to the cumulative share of top-scored profiles it reaches down
    to (``{"high": 0.1, "medium": 0.3}``: the top 10 %, then the next 20 %). The floors are logged
    in each audience's PQL and description, so every run's cut-offs are on record (docs/reference-notes.md#m12).

    :param context: the task context.
    :param run: the run plan.
    :param scores_keys: the score files (``score`` output).
    """
    tiers = sorted(context["params"]["audience_tiers"].items(), key=lambda item: float(item[1]))
    if not tiers:
        raise ValueError('audience_tiers is empty: give at least one tier, e.g. {"high": 0.1}')
    for tier, share in tiers:
        if not 0.0 < float(share) <= 1.0:
            raise ValueError(f"audience_tiers[{tier!r}] = {share} is not a share of profiles in (0, 1]")
    s3 = _s3()
    scores = pa.concat_tables([artifacts.read_parquet(s3, run["artifact_bucket"], key) for key in scores_keys])[
        f"_{run['tenant']}"
    ].combine_chunks()
    propensity = scores.field("propensity")
    (model_version,) = pc.unique(scores.field("propensityModelVersion")).to_pylist()
    field = f"_{run['tenant']}.propensity"
    # Profile attributes are last-write-wins: a user not re-scored today (e.g. converted since) keeps an
    # old score, so the audiences take only the profiles scored by this run's model.
    fresh = f'_{run["tenant"]}.propensityModelVersion = "{model_version}"'
    audiences, upper = [], None
    for tier, share in tiers:
        floor = round(float(pc.quantile(propensity, q=1.0 - float(share))[0].as_py()), 6)
        below = f"{field} < {upper}" if upper is not None else f"{field} <= 1"
        audiences.append(
            {
                "name": f"Propensity to subscribe: {tier}",
                "pql": f"{field} >= {floor} and {below} and {fresh}",
                "description": f"Top {float(share):.0%} of profiles by propensity as of {run['as_of']} "
                f"(propensity in [{floor}, {upper if upper is not None else 1}]).",
            }
        )
        upper = floor
    log.info("stage=audiences as_of=%s tiers=%s", run["as_of"], [a["pql"] for a in audiences])
    return audiences


def summarize(context: dict, run: dict) -> dict[str, Any]:
    """The run in one small record (also logged): rows, AUC vs ceiling, scores, audiences, files.

    :param context: the task context.
    :param run: the run plan.
    """
    ti = context["ti"]

    def pull(task_id: str) -> Any:
        return ti.xcom_pull(task_ids=task_id)

    event_batches = pull("synthetic_data.ingest_events") or []
    if isinstance(event_batches, dict):
        event_batches = [event_batches]
    metrics = pull("train.train_model") or {}
    score_batch = pull("ingest_scores.scores_batch") or {}
    audiences = pull("audiences.evaluate") or {}
    activation = pull("activate.s3_destination") or {}
    summary = {
        "as_of": run["as_of"],
        "events_ingested": sum(batch.get("rows", 0) for batch in event_batches if batch),
        "event_batches": len([b for b in event_batches if b]),
        "eda": pull("eda.report"),
        "roc_auc": metrics.get("roc_auc"),
        "ceiling_roc_auc": metrics.get("ceiling_roc_auc"),
        "baseline_roc_auc": metrics.get("baseline_roc_auc"),
        "model": metrics.get("model_key"),
        "model_version": metrics.get("model_version"),
        "scored_profiles": score_batch.get("rows"),
        "scores_batch": score_batch.get("batch_id"),
        "audiences": {name: audience.get("count") for name, audience in audiences.items()},
        "activation_files": [f for run_ in (activation.get("runs") or {}).values() for f in run_["files"]],
        "artifacts": f"s3://{run['artifact_bucket']}/",
    }
    log.info("stage=summary %s", summary)
    return summary
