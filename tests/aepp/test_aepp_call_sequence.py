"""The pipeline's whole call sequence through Adobe's own Python client, ``aepp`` (pinned), against
the emulator: a user's existing aepp script must work on it as on AEP.

Where aepp and the OpenAPI specs disagree, the emulator follows what AEP does (aepp is written
against the live service); the comments say where.
"""

from __future__ import annotations

import uuid

import pytest
from aepp import catalog, destinationinstanceservice, flowservice, ingestion, queryservice, schema, segmentation

from tests.emulator import field_group_body
from tests.emulator.flows import S3_AUTH, S3_SPEC
from tests.emulator.test_call_sequence import wait
from tests.support.aepp_client import configure_aepp

pytestmark = pytest.mark.integration

PROFILES = 40


@pytest.fixture
def connect(emulator, sandbox):
    return configure_aepp(emulator.url, emulator.settings, sandbox)


def test_pipeline_call_sequence_through_aepp(connect, emulator, sandbox):
    run = uuid.uuid4().hex[:8]

    # Token (aepp fetches it from IMS on first use) and the tenant.
    registry = schema.Schema(config=connect)
    tenant = registry.getTenantId()
    assert tenant == emulator.settings.tenant_id

    # Field group, Profile schema, primary identity descriptor, union tag.
    field_group = registry.createFieldGroup(
        field_group_body(tenant, f"aepp scores {run}", intended="https://ns.adobe.com/xdm/context/profile")
    )
    assert "$id" in field_group, field_group
    created_schema = registry.createSchema(
        {
            "title": f"aepp scores {run}",
            "type": "object",
            "allOf": [{"$ref": "https://ns.adobe.com/xdm/context/profile"}, {"$ref": field_group["$id"]}],
        }
    )
    schema_id = created_schema["$id"]
    descriptor = registry.createDescriptor(
        descriptorObj={
            "@type": "xdm:descriptorIdentity",
            "xdm:sourceSchema": schema_id,
            "xdm:sourceVersion": 1,
            "xdm:sourceProperty": f"/_{tenant}/userid",
            "xdm:namespace": "ECID",
            "xdm:property": "xdm:code",
            "xdm:isPrimary": True,
        }
    )
    assert descriptor.get("@id"), descriptor
    assert "union" in registry.enableSchemaForRealTime(schema_id)["meta:immutableTags"]

    # Profile-enabled dataset.
    datasets = catalog.Catalog(config=connect)
    created = datasets.createDataSet(name=f"aepp_scores_{run}", schemaId=schema_id, profileEnabled=True)
    dataset_id = created[0].rsplit("/", 1)[1]
    dataset = datasets.getDataSet(dataset_id)[dataset_id]
    assert dataset["tags"]["unifiedProfile"] == ["enabled:true"]
    table = dataset["tags"]["adobe/pqs/table"][0]

    # Batch: create, upload (JSON records, as aepp sends them), complete, poll to success. AEP answers
    # the file PUT 200 with an empty body (aepp reads any other status as an error), the spec lists 201.
    loader = ingestion.DataIngestion(config=connect)
    # aepp sends the records as one JSON array: a multi-line JSON batch, as AEP requires for it.
    batch = loader.createBatch(datasetId=dataset_id, format="json", multiline=True)
    records = [
        {"_id": f"{run}-{i:03d}", f"_{tenant}": {"userid": f"{run}-{i:03d}", "propensity": i / PROFILES}}
        for i in range(PROFILES)
    ]
    assert loader.uploadSmallFile(batchId=batch["id"], datasetId=dataset_id, filePath="scores.json", data=records) == {}
    loader.uploadSmallFileFinish(batchId=batch["id"])
    done = wait(
        lambda: datasets.getBatch(batch["id"])[batch["id"]], lambda b: b["status"] not in ("loading", "staging")
    )
    assert done["status"] == "success", done
    assert done["metrics"]["outputRecordCount"] == PROFILES

    # Query Service REST: a template, a CTAS query from it, its Catalog dataset.
    qs = queryservice.QueryService(config=connect)
    ctas = f"aepp_high_{run}"
    template = qs.createQueryTemplate(
        name=f"aepp high {run}",
        sql=f"CREATE TABLE {ctas} AS SELECT _{tenant}.userid AS userid, _{tenant}.propensity AS propensity"
        f" FROM {table} WHERE _{tenant}.propensity >= $threshold",
        queryParameters={"threshold": "0.5"},
    )
    query = qs.postQueries(name=f"aepp ctas {run}", templateId=template["id"], dbname=f"{sandbox}:all")
    query = wait(lambda: qs.getQuery(query["id"]), lambda q: q["state"] in ("SUCCESS", "FAILED", "KILLED", "TIMEOUT"))
    assert query["state"] == "SUCCESS", query["errors"]
    ctas_datasets = datasets.getDataSets(name=ctas)
    [(ctas_id, ctas_doc)] = ctas_datasets.items()
    assert ctas_doc["tags"]["adobe/pqs/table"] == [ctas]

    # Query Service over the PostgreSQL wire (aepp's psycopg2 client), Spark SQL over nested fields.
    wire = queryservice.InteractiveQuery2(qs.connection())
    frame = wire.query(f"SELECT count(*) AS n, max(propensity) AS top FROM {ctas}", output="dataframe")
    assert frame["n"].iloc[0] == PROFILES // 2 and frame["top"].iloc[0] == pytest.approx((PROFILES - 1) / PROFILES)
    nested = wire.query(f"SELECT _{tenant} FROM {table} ORDER BY _{tenant}.userid LIMIT 1", output="dataframe")
    assert nested[f"_{tenant}"].iloc[0] == {"userid": f"{run}-000", "propensity": 0.0}
    current = wire.query(f"SELECT * FROM (SELECT history_meta('{table}')) WHERE is_current = true")
    assert current["output_record_count"].tolist() == [PROFILES]

    # Segment definition and job; the audience it is.
    segments = segmentation.Segmentation(config=connect)
    definition = segments.createSegment(
        {
            "name": f"aepp high {run}",
            "description": "propensity of 0.8 and above",
            "ttlInDays": 60,
            "profileInstanceId": "ups",
            "expression": {
                "type": "PQL",
                "format": "pql/text",
                "value": f'_{tenant}.propensity >= 0.8 and _{tenant}.userid.startsWith("{run}-")',
            },
            "schema": {"name": "_xdm.context.profile"},
        }
    )
    job = segments.createJob([definition["id"]])
    job = wait(lambda: segments.getJob(job["id"]), lambda j: j["status"] in ("SUCCEEDED", "FAILED", "CANCELLED"))
    assert job["status"] == "SUCCEEDED", job
    assert job["metrics"]["segmentedProfileCounter"][definition["id"]] == PROFILES // 5
    assert any(a["id"] == definition["id"] for a in segments.getAudiences(name=f"aepp high {run}"))

    # Flow specs, then a dataset export of the CTAS dataset to S3.
    flows = flowservice.FlowService(config=connect)
    specs = {spec["name"]: spec["id"] for spec in flows.getFlowSpecs()}
    assert "269ba276-16fc-47db-92b0-c1049a3c131f" in specs.values()
    base = flows.createConnection(data={"name": f"aepp s3 {run}", "auth": S3_AUTH, "connectionSpec": S3_SPEC})
    source = flows.createSourceConnection(
        {
            "name": f"aepp src {run}",
            "connectionSpec": {"id": "23598e46-f560-407b-88d5-ea6207e49db0", "version": "1.0"},
            "params": {"datasets": [{"dataSetId": ctas_id, "name": ctas}]},
        }
    )
    target = flows.createTargetConnection(
        data={
            "name": f"aepp tgt {run}",
            "baseConnectionId": base["id"],
            "connectionSpec": S3_SPEC,
            "params": {
                "mode": "Server-to-server",
                "bucketName": emulator.settings.destination_bucket,
                "path": f"aepp/{run}",
                "compression": "GZIP",
                "datasetFileType": "PARQUET",
            },
        }
    )
    flow = flows.createFlow(
        flow_spec_id="269ba276-16fc-47db-92b0-c1049a3c131f",
        obj={
            "name": f"aepp export {run}",
            "flowSpec": {"id": "269ba276-16fc-47db-92b0-c1049a3c131f", "version": "1.0"},
            "sourceConnectionIds": [source["id"]],
            "targetConnectionIds": [target["id"]],
            "transformations": [],
            "scheduleParams": {"interval": 3, "timeUnit": "hour", "startTime": 4102444800},
        },
    )
    adhoc = destinationinstanceservice.DestinationInstanceService(config=connect)
    started = adhoc.createAdHocDatasetExport({flow["id"]: [ctas_id]})
    run_id = started["destinations"][0]["datasets"][0]["statusURL"].rsplit("/", 1)[1]
    # aepp's getRun answers the run's items list.
    [export] = wait(lambda: flows.getRun(run_id), lambda r: "completedAtUTC" in r[0]["metrics"]["durationSummary"])
    assert export["metrics"]["statusSummary"]["status"].lower() == "success", export


def test_interactive_query_over_the_wire_runs_aep_extensions(connect, emulator, sandbox):
    """aepp's InteractiveQuery2 with Query Service forms: SET auto_to_json, table_exists()."""
    wire = queryservice.InteractiveQuery2(queryservice.QueryService(config=connect).connection())
    result = wire.query("SET auto_to_json=true; SELECT 1 AS one", output="dataframe")
    assert result["one"].tolist() == [1]
    frame = wire.query("SELECT table_exists('no_such_table') AS found", output="dataframe")
    assert frame["found"].tolist() == [False]
