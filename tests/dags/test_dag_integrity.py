"""DAG integrity and policy: the DAG folder imports cleanly, with no I/O at parse time."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from airflow.timetables.interval import CronDataIntervalTimetable

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_ID = "aep_propensity_pipeline"


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    """Parse the DAG folder with the network blocked: parsing must not touch AEP, S3 or a database."""
    from airflow.dag_processing.dagbag import DagBag

    def refuse(*args, **kwargs):
        raise AssertionError(f"network I/O at DAG parse time: {args}")

    patch = pytest.MonkeyPatch()
    patch.setattr(socket.socket, "connect", refuse)
    try:
        bag = DagBag(dag_folder=str(DAGS_DIR))
    finally:
        patch.undo()
    return bag


def test_dag_folder_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert DAG_ID in dagbag.dags


def test_dag_policy(dagbag):
    dag = dagbag.dags[DAG_ID]
    assert isinstance(dag.timetable, CronDataIntervalTimetable), "a zero-width cron interval selects no data"
    assert dag.max_active_runs == 1
    assert dag.catchup is False
    assert dag.tags and "aep" in dag.tags
    assert dag.doc_md
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", task.task_id
        assert task.retries >= 2, task.task_id


def test_aep_tasks_use_the_aep_pool(dagbag):
    dag = dagbag.dags[DAG_ID]
    aep_tasks = [t for t in dag.tasks if type(t).__module__.startswith("aep_hooks")]
    assert aep_tasks, "the DAG should use the AEP operators"
    assert {t.pool for t in aep_tasks} == {"aep_api"}


def test_stages_are_task_groups_in_pipeline_order(dagbag):
    dag = dagbag.dags[DAG_ID]
    groups = list(dag.task_group.children)
    expected = [
        "setup",
        "synthetic_data",
        "eda",
        "featurize",
        "export",
        "train",
        "score",
        "ingest_scores",
        "audiences",
        "activate",
    ]
    assert [g for g in groups if g in expected] == expected
