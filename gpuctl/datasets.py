"""A project's datasets on the machine: uploaded once into a cache that outlives runs.

A 50 GB dataset must not travel with every run. Local directories go to
`base/data/<project>/<name>` with the same incremental sync as the code (a second run
uploads nothing that did not change); s3:// sources are fetched by the agent on the
machine through presigned GET URLs made here, so no cloud credential ever reaches it
(the URLs travel on the agent's secret pipe, never to its disk). Either way the script
finds the data at its `target` inside the project, as a symlink into the cache.
"""

from __future__ import annotations

import json
import os
import re
import shlex
from collections.abc import Generator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, RemoteError
from .events import Event, Synced
from .files import walk_tree
from .host import Host

URL_SECONDS_MIN = 6 * 3600  # presigned URLs must outlive a slow first download
URL_SECONDS_MAX = 7 * 24 * 3600  # S3's own limit for SigV4


def cache_dir(host: Host, project: str, name: str) -> str:
    return f"{host.base_dir()}/data/{project}/{name}"


def urls_env(name: str) -> str:
    return "GPUCTL_DATA_URLS_" + re.sub(r"[^A-Z0-9]", "_", name.upper())


def sync(
    host: Host, run_id: str, work: str, job: Mapping[str, Any]
) -> Generator[Event, None, list[dict[str, Any]]]:
    """Upload the local datasets (what changed only) and link every dataset into the
    project's copy; returns the agent's `data` entries for the s3 ones."""
    project = str(job.get("project") or "project")
    agent_entries: list[dict[str, Any]] = []
    for source in job.get("data") or ():
        name, src, target = str(source["name"]), str(source["src"]), str(source["target"])
        remote = cache_dir(host, project, name)
        if src.startswith("s3://"):
            agent_entries.append({"name": name, "dir": remote, "urls_env": urls_env(name)})
        else:
            root = Path(src)
            if not root.is_dir():
                raise ConfigError(
                    f"dataset {name}: {src} is not a directory any more",
                    hint="fix [data] in gpuctl.toml",
                )
            files = walk_tree(root)
            stats = yield from host.put_tree(run_id, root, files, remote)
            yield Synced(
                run_id,
                stats.files,
                stats.bytes,
                stats.seconds,
                stats.skipped,
                stats.method,
                what=f"dataset {name}",
            )
        link = f"{work}/{target}"
        parent = link.rsplit("/", 1)[0]
        host.exec(
            f"mkdir -p {shlex.quote(remote)} {shlex.quote(parent)} && "
            f"rm -rf {shlex.quote(link)} && ln -s {shlex.quote(remote)} {shlex.quote(link)}",
            timeout=60,
        ).check(f"link dataset {name}")
    return agent_entries


def presigned(
    job: Mapping[str, Any], seconds: float, aws_profile: str | None = None
) -> dict[str, str]:
    """{urls_env name: JSON list of objects with a presigned GET URL} for each s3 dataset."""
    out: dict[str, str] = {}
    sources = [s for s in job.get("data") or () if str(s["src"]).startswith("s3://")]
    if not sources:
        return out
    expires = int(min(URL_SECONDS_MAX, max(URL_SECONDS_MIN, seconds)))
    client = _s3(aws_profile)
    for source in sources:
        out[urls_env(str(source["name"]))] = json.dumps(
            list(_objects(client, str(source["name"]), str(source["src"]), expires))
        )
    return out


def _s3(aws_profile: str | None) -> Any:
    import boto3
    from botocore.config import Config

    session = boto3.Session(profile_name=aws_profile) if aws_profile else boto3.Session()
    return session.client("s3", config=Config(signature_version="s3v4"))


def _objects(client: Any, name: str, src: str, expires: int) -> Sequence[dict[str, Any]]:
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, prefix = src[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    out = []
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}/" if prefix else ""
        )
        for page in pages:
            for item in page.get("Contents", ()):
                key = str(item["Key"])
                rel = key[len(prefix) :].lstrip("/") if prefix else key
                if not rel or rel.endswith("/"):
                    continue
                url = client.generate_presigned_url(
                    "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=expires
                )
                etag = str(item.get("ETag", "")).strip('"')
                out.append({"key": rel, "url": url, "size": int(item.get("Size", 0)), "etag": etag})
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "error")
        raise RemoteError(
            f"dataset {name}: cannot list {src} ({code})",
            hint="check the bucket's name and that your AWS credentials may read it",
        ) from None
    except BotoCoreError as exc:
        raise RemoteError(
            f"dataset {name}: cannot list {src} ({exc})",
            hint="configure AWS credentials here (aws configure); the machine never needs any",
        ) from None
    if not out:
        raise RemoteError(
            f"dataset {name}: {src} holds no objects", hint="check the bucket and prefix"
        )
    return out


def check_credentials(job: Mapping[str, Any], aws_profile: str | None = None) -> None:
    """Before anything is created: an s3 dataset needs AWS credentials on this machine."""
    if not any(str(s["src"]).startswith("s3://") for s in job.get("data") or ()):
        return
    try:
        import boto3

        session = boto3.Session(profile_name=aws_profile) if aws_profile else boto3.Session()
        found = session.get_credentials()
    except Exception as exc:  # botocore's ProfileNotFound and friends
        raise ConfigError(f"s3 dataset: AWS credentials unusable ({exc})") from None
    if found is None and not os.environ.get("AWS_ACCESS_KEY_ID"):
        raise ConfigError(
            "an s3:// dataset needs AWS credentials here to presign its URLs",
            hint="run `aws configure` (the machine itself never gets credentials)",
        )
