"""
A DAG chaining the AEP operators against the emulator, its per-test names and fixtures' data, and
readers of a finished ``dag.test()`` run (used by the emulator tests of the operators).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from aep_hooks.operators.catalog import AEPEnsureDatasetOperator
from aep_hooks.operators.flow_service import AEPActivateAudiencesOperator, AEPDatasetExportOperator
from aep_hooks.operators.ingestion import AEPBatchIngestOperator
from aep_hooks.operators.query_service import AEPQueryOperator
from aep_hooks.operators.segmentation import AEPAudienceOperator
from airflow.sdk import DAG, chain

STAGING_BUCKET = "aep-propensity"
DESTINATION_BUCKET = "aep-destination"
CLIENT_SECRET = "aep-local-secret"
DESTINATION_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AS_OF = "2026-01-15"
USERS = 20


def pipeline(
    dag_id: str,
    names: dict,
    *,
    deferrable: bool,
    stages: tuple[str, ...],
    retries: int = 2,
    export_path: str | None = None,
) -> DAG:
    """
    A DAG chaining the operators named in ``stages``, in that order.

    ``rebuild`` rebuilds a CTAS dataset (a new one on each run), ``export_rebuilt`` exports it;
    ``export_path`` is where the exports go (default ``exports/<dag_id>``).
    """
    export_path = export_path or f"exports/{dag_id}"
    common = {"deferrable": deferrable, "poll_interval": 0.2, "timeout": timedelta(minutes=3)}
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        template_searchpath=[names["searchpath"]],
        params={"suffix": names["suffix"]},
        default_args={"retries": retries, "retry_delay": timedelta(seconds=0)},
    ) as dag:
        dataset_id = '{{ ti.xcom_pull("ensure")["dataset_id"] }}'
        factories = {
            "ensure": lambda: AEPEnsureDatasetOperator(task_id="ensure", spec="dataset.json", **common),
            "ingest": lambda: AEPBatchIngestOperator(
                task_id="ingest",
                dataset_id=dataset_id,
                s3_bucket=STAGING_BUCKET,
                s3_prefix=names["prefix"],
                **common,
            ),
            "count": lambda: AEPQueryOperator(task_id="count", sql="count.sql", mode="interactive", **common),
            "ctas": lambda: AEPQueryOperator(
                task_id="ctas",
                sql="high.sql",
                query_parameters={"threshold": "0.5"},
                ctas_table=f"high_{names['suffix']}_{{{{ ts_nodash | lower }}}}",
                **common,
            ),
            "export": lambda: AEPDatasetExportOperator(
                task_id="export",
                dataset_id=dataset_id,
                s3_bucket=DESTINATION_BUCKET,
                s3_path=export_path,
                flow_name=f"export {names['suffix']}",
                destination_conn_id="aep_destination",
                **common,
            ),
            "rebuild": lambda: AEPQueryOperator(task_id="rebuild", sql="rebuild.sql", **common),
            "export_rebuilt": lambda: AEPDatasetExportOperator(
                task_id="export_rebuilt",
                dataset_id='{{ ti.xcom_pull("rebuild")["dataset_id"] }}',
                s3_bucket=DESTINATION_BUCKET,
                s3_path=export_path,
                flow_name=f"export rebuilt {names['suffix']}",
                destination_conn_id="aep_destination",
                **common,
            ),
            "audience": lambda: AEPAudienceOperator(
                task_id="audience",
                audiences=[
                    {"name": f"high {names['suffix']}", "pql": "_acme.propensity >= 0.5", "description": "high"},
                    {"name": f"low {names['suffix']}", "pql": "_acme.propensity < 0.2"},
                ],
                **common,
            ),
            "activate": lambda: AEPActivateAudiencesOperator(
                task_id="activate",
                audience_ids=f'{{{{ ti.xcom_pull("audience")["high {names["suffix"]}"]["id"] | tojson }}}}'.join(
                    ["[", "]"]
                ),
                destination_name=f"activation {names['suffix']}",
                s3_bucket=DESTINATION_BUCKET,
                s3_path=f"activations/{dag_id}",
                destination_conn_id="aep_destination",
                **common,
            ),
        }
        chain(*[factories[name]() for name in stages])
    return dag


def results(dag_run) -> dict:
    """``{task_id: return value}`` of a finished run."""
    from airflow import settings
    from airflow.models.xcom import XComModel

    with settings.Session() as session:
        rows = session.query(XComModel).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id, key="return_value")
        return {row.task_id: XComModel.deserialize_value(row) for row in rows}


def ti_states(dag_run) -> dict:
    from airflow import settings
    from airflow.models.taskinstance import TaskInstance

    with settings.Session() as session:
        tis = session.query(TaskInstance).filter_by(dag_id=dag_run.dag_id, run_id=dag_run.run_id)
        return {ti.task_id: (ti.state, ti.try_number) for ti in tis}
