"""Where the pipeline's artefacts live in S3, and how they are read and written.

Every key carries the date it belongs to, so a rerun or a backfill of a date overwrites that
date's objects and never adds new ones.
"""

from __future__ import annotations

import io
import json
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def events_key(day: date) -> str:
    # The file name repeats the day: a history batch holds several days and needs distinct names.
    return f"synthetic/events/dt={day.isoformat()}/events-{day.isoformat()}.parquet"


def profiles_key(as_of: date) -> str:
    return f"synthetic/profiles/dt={as_of.isoformat()}/profiles.parquet"


def truth_key(as_of: date) -> str:
    """True propensities of the synthetic population (the ceiling a model can reach)."""
    return f"synthetic/truth/dt={as_of.isoformat()}/true_propensity.parquet"


def report_key(as_of: date) -> str:
    return f"reports/dt={as_of.isoformat()}/eda.json"


def model_key(as_of: date) -> str:
    return f"models/dt={as_of.isoformat()}/model.skops"


def metrics_key(as_of: date) -> str:
    return f"models/dt={as_of.isoformat()}/metrics.json"


def scores_key(as_of: date) -> str:
    return f"scores/dt={as_of.isoformat()}/scores.parquet"


def write_parquet(s3, bucket: str, key: str, table: pa.Table) -> int:
    """Write ``table`` as one Parquet object; returns its size in bytes.

    :param s3: a boto3 S3 client.
    :param bucket: bucket name.
    :param key: object key.
    :param table: the data.
    """
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    body = sink.getvalue()
    s3.put_object(Bucket=bucket, Key=key, Body=body)
    return len(body)


def read_parquet(s3, bucket: str, key: str) -> pa.Table:
    return pq.read_table(io.BytesIO(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def write_json(s3, bucket: str, key: str, payload: Any) -> None:
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(payload, indent=2, default=str).encode(), ContentType="application/json"
    )


def read_json(s3, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def object_exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
    except s3.exceptions.ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True
