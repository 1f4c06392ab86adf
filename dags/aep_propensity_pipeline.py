"""
### AEP subscription-propensity pipeline

One run per as-of date, end to end on Adobe Experience Platform:

```
setup ─ synthetic_data ─ eda ─ featurize ─ export ─ train ─ score ─ ingest_scores ─ audiences ─ activate
```

| stage | what it does | where the output goes |
|---|---|---|
| `setup` | get-or-create the XDM schemas, identity descriptors and datasets (events, profiles, scores); plan the run's dates and names | AEP (once), XCom `setup.plan` |
| `synthetic_data` | simulate that date's experience events (and, on a first run, ten weeks of history) and batch-ingest them; off with `synthetic_data=false` on a real org | S3 `synthetic/`, AEP events/profiles datasets |
| `eda` | Query Service summaries: row counts, event funnel, conversion rate | S3 `reports/dt=…/eda.json` |
| `featurize` | `include/sql/featurize.sql` as CTAS: a training set (cut-off one label window before the run date, with labels) and a scoring set (cut-off = run date) | AEP datasets `propensity_training_<date>`, `propensity_scoring_<date>` |
| `export` | Flow Service dataset export of both sets | S3 destination `propensity/exports/<dataset>/exportTime=…/` |
| `train` | scikit-learn HistGradientBoosting (+ logistic baseline), holdout metrics, quality gate | S3 `models/dt=…/model.skops`, `metrics.json` |
| `score` | every profile of the scoring set, with model version and scoring time | S3 `scores/dt=…/scores.parquet` |
| `ingest_scores` | batch ingestion into the Profile-enabled scores dataset (a rerun replays the date's batch) | AEP scores dataset |
| `audiences` | score-tier audiences upserted by name and evaluated | AEP segment definitions + job |
| `activate` | audiences activated to the S3 destination (`activate=false` to skip) | S3 destination `propensity/audiences/` |

Every task is keyed by the run's as-of date (see `propensity.dates.resolve_as_of_date`): a rerun or a
backfill of a date overwrites that date's outputs and never duplicates them.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from aep_hooks.operators import (
    AEPActivateAudiencesOperator,
    AEPAudienceOperator,
    AEPBatchIngestOperator,
    AEPDatasetExportOperator,
    AEPEnsureDatasetOperator,
    AEPQueryOperator,
)
from airflow.sdk import DAG, Param, TaskGroup, get_current_context, task
from airflow.timetables.interval import CronDataIntervalTimetable
from propensity import pipeline

DAG_ID = "aep_propensity_pipeline"
SQL_DIR = Path(__file__).resolve().parent.parent / "include" / "sql"
AEP_POOL = "aep_api"
# AEP calls get a pool and a deadline; local runs poll fast, real AEP jobs take minutes.
AEP_TASK_ARGS = {"pool": AEP_POOL, "poll_interval": 5.0, "timeout": timedelta(hours=2)}


with DAG(
    dag_id=DAG_ID,
    description="Subscription propensity on AEP: ingest, featurize, train, score, write back, target",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"),
    start_date=pipeline.START_DATE,
    catchup=False,
    max_active_runs=1,
    max_consecutive_failed_dag_runs=3,
    template_searchpath=[str(SQL_DIR)],
    tags=["aep", "propensity", "ml"],
    default_args={
        "owner": "propensity-platform",
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    },
    params=pipeline.dag_params(Param),
) as dag:
    with TaskGroup("setup", tooltip="XDM schemas, identities and datasets; the run plan") as setup:
        ensure_events = AEPEnsureDatasetOperator(
            task_id="ensure_events_dataset", spec=pipeline.EVENTS_DATASET, **AEP_TASK_ARGS
        )
        ensure_profiles = AEPEnsureDatasetOperator(
            task_id="ensure_profiles_dataset", spec=pipeline.PROFILES_DATASET, **AEP_TASK_ARGS
        )
        ensure_scores = AEPEnsureDatasetOperator(
            task_id="ensure_scores_dataset", spec=pipeline.SCORES_DATASET, **AEP_TASK_ARGS
        )

        # multiple_outputs: each plan entry is its own XCom, so tasks take exactly the values they need.
        @task(multiple_outputs=True)
        def plan(events: dict, profiles: dict, scores: dict) -> dict:
            """The run's as-of date, cut-offs, table and object names: one place, one XCom."""
            return pipeline.plan_run(get_current_context(), events=events, profiles=profiles, scores=scores)

        run_plan = plan(ensure_events.output, ensure_profiles.output, ensure_scores.output)

    with TaskGroup("synthetic_data", tooltip="Simulated events and profiles, batch-ingested") as synthetic_data:

        @task
        def generate_events(run: dict) -> list[dict]:
            """Simulate the day's events (ten weeks of history on a first run); one entry per batch."""
            return pipeline.generate_events(get_current_context(), run)

        @task
        def generate_profiles(run: dict) -> list[str]:
            """The population's profiles and their true propensities (the ceiling for model quality)."""
            return pipeline.generate_profiles(get_current_context(), run)

        event_batches = generate_events(run_plan)
        ingest_events = AEPBatchIngestOperator.partial(
            task_id="ingest_events",
            dataset_id=run_plan["events_dataset_id"],
            s3_bucket=run_plan["artifact_bucket"],
            max_active_tis_per_dagrun=2,
            **AEP_TASK_ARGS,
        ).expand_kwargs(event_batches)
        ingest_profiles = AEPBatchIngestOperator(
            task_id="ingest_profiles",
            dataset_id=run_plan["profiles_dataset_id"],
            s3_bucket=run_plan["artifact_bucket"],
            s3_keys=generate_profiles(run_plan),
            as_of_date=run_plan["as_of"],
            **AEP_TASK_ARGS,
        )

    with TaskGroup("eda", tooltip="Query Service summaries into a report") as eda:
        eda_queries = {
            name: AEPQueryOperator(
                task_id=name,
                sql=f"eda_{name}.sql",
                sql_vars=run_plan["eda_vars"],
                mode="interactive",
                trigger_rule="none_failed",
                **AEP_TASK_ARGS,
            )
            for name in pipeline.EDA_QUERIES
        }

        @task(trigger_rule="none_failed")
        def report(run: dict, results: dict) -> dict:
            """Write the EDA report to S3; return its headline numbers."""
            return pipeline.write_eda_report(run, results)

        eda_report = report(run_plan, {name: op.output for name, op in eda_queries.items()})

    with TaskGroup("featurize", tooltip="Leak-free features as of a cut-off, as CTAS datasets") as featurize:
        featurize_training = AEPQueryOperator(
            task_id="training_set",
            sql="featurize.sql",
            sql_vars=run_plan["training_features"],
            trigger_rule="none_failed",
            **AEP_TASK_ARGS,
        )
        featurize_scoring = AEPQueryOperator(
            task_id="scoring_set",
            sql="featurize.sql",
            sql_vars=run_plan["scoring_features"],
            trigger_rule="none_failed",
            **AEP_TASK_ARGS,
        )

    with TaskGroup("export", tooltip="Flow Service dataset export to S3") as export:
        export_training = AEPDatasetExportOperator(
            task_id="training_set",
            dataset_id="{{ ti.xcom_pull(task_ids='featurize.training_set')['dataset_id'] }}",
            flow_name=run_plan["training_export_flow"],
            s3_bucket=run_plan["destination_bucket"],
            s3_path=pipeline.EXPORT_PATH,
            **AEP_TASK_ARGS,
        )
        export_scoring = AEPDatasetExportOperator(
            task_id="scoring_set",
            dataset_id="{{ ti.xcom_pull(task_ids='featurize.scoring_set')['dataset_id'] }}",
            flow_name=run_plan["scoring_export_flow"],
            s3_bucket=run_plan["destination_bucket"],
            s3_path=pipeline.EXPORT_PATH,
            **AEP_TASK_ARGS,
        )

    with TaskGroup("train", tooltip="scikit-learn model, holdout metrics, quality gate") as train:

        @task
        def train_model(run: dict, training_export: dict) -> dict:
            """Train on every part of the training export; write the model and metrics.json to S3."""
            return pipeline.train(get_current_context(), run, training_export)

        trained = train_model(run_plan, export_training.output)

    with TaskGroup("score", tooltip="Score every profile of the scoring set") as score:

        @task
        def score_profiles(run: dict, scoring_export: dict, model: dict) -> list[str]:
            """Score every profile; the scores carry the model version and the scoring time."""
            return pipeline.score(get_current_context(), run, scoring_export, model)

        scores_keys = score_profiles(run_plan, export_scoring.output, trained)

    with TaskGroup("ingest_scores", tooltip="Scores into the Profile-enabled scores dataset") as ingest_scores:
        ingest_score_batch = AEPBatchIngestOperator(
            task_id="scores_batch",
            dataset_id=run_plan["scores_dataset_id"],
            s3_bucket=run_plan["artifact_bucket"],
            s3_keys=scores_keys,
            as_of_date=run_plan["as_of"],
            **AEP_TASK_ARGS,
        )

    with TaskGroup("audiences", tooltip="Score-tier audiences, upserted and evaluated") as audiences:

        @task
        def audience_definitions(run: dict, scores: list[str]) -> list[dict]:
            """Audiences from the run's score tiers (DAG params) and score distribution."""
            return pipeline.audience_definitions(get_current_context(), run, scores)

        evaluate_audiences = AEPAudienceOperator(
            task_id="evaluate", audiences=audience_definitions(run_plan, scores_keys), **AEP_TASK_ARGS
        )

    with TaskGroup("activate", tooltip="Audiences to the S3 destination") as activate:
        # Respect trigger rules downstream: a disabled activation skips the activation, not the summary.
        @task.short_circuit(ignore_downstream_trigger_rules=False)
        def activation_enabled() -> bool:
            return bool(get_current_context()["params"]["activate"])

        @task
        def audience_ids(evaluated: dict) -> list[str]:
            return [audience["id"] for audience in evaluated.values()]

        activate_audiences = AEPActivateAudiencesOperator(
            task_id="s3_destination",
            audience_ids=audience_ids(evaluate_audiences.output),
            destination_name=run_plan["activation_destination"],
            s3_bucket=run_plan["destination_bucket"],
            s3_path=pipeline.ACTIVATION_PATH,
            schedule_start_date=run_plan["as_of"],
            **AEP_TASK_ARGS,
        )
        activation_enabled() >> activate_audiences

    @task(trigger_rule="none_failed")
    def summary(run: dict) -> dict:
        """One small record of the run: rows, AUC vs ceiling, scores, audiences, where the files are."""
        return pipeline.summarize(get_current_context(), run)

    run_summary = summary(run_plan)

    [ingest_events, ingest_profiles] >> eda
    eda_report >> [featurize_training, featurize_scoring]
    featurize_training >> export_training
    featurize_scoring >> export_scoring
    ingest_score_batch >> evaluate_audiences
    evaluate_audiences >> activate
    activate >> run_summary
