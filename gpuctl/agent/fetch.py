"""A job's data from s3, through presigned GET URLs gpuctl made (standard library only).

The URLs are secrets: they arrive on the supervisor's pipe (a JSON list of
`{"key", "url", "size", "etag"}` per data set) and never reach a log or a file; the log
names keys and bytes. A manifest in the data dir remembers what an earlier run fetched,
so a second run on the same machine downloads only what changed.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

MANIFEST = ".gpuctl-manifest.json"
CHUNK = 1 << 20


class FetchError(Exception):
    """`data <name>: <key>: <why>`: the run's reason (never holds a URL)."""


def safe_key(key: str) -> PurePosixPath | None:
    path = PurePosixPath(key)
    if not key or path.is_absolute() or ".." in path.parts or key.startswith("\\"):
        return None
    return path


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_manifest(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def describe(exc: BaseException, url: str) -> str:
    """Why a download failed, without the URL (it is a credential)."""
    if isinstance(exc, urllib.error.HTTPError):
        text = f"HTTP {exc.code}"
    elif isinstance(exc, urllib.error.URLError):
        text = f"{type(exc).__name__}: {exc.reason}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return text.replace(url, "<url>")[:200]


def fetch_set(
    name: str, target: Path, objects: Any, log: Callable[[str], None], timeout: float = 300.0
) -> tuple[int, int, int]:
    """Download one data set into target; returns (fetched, bytes, up to date)."""
    if not isinstance(objects, list):
        raise FetchError(f"data {name}: the URL list is not a list")
    target.mkdir(parents=True, exist_ok=True)
    manifest_path = target / MANIFEST
    manifest = read_manifest(manifest_path)
    fetched = total = fresh = 0
    for obj in objects:
        key = str(obj.get("key", "")) if isinstance(obj, dict) else ""
        rel = safe_key(key)
        if rel is None:
            raise FetchError(f"data {name}: {key}: refused (an absolute path or '..')")
        url = str(obj.get("url") or "")
        size, etag = obj.get("size"), obj.get("etag")
        dest = target.joinpath(*rel.parts)
        known = manifest.get(key) or {}
        if (
            dest.is_file()
            and known.get("size") == size
            and known.get("etag") == etag
            and (size is None or dest.stat().st_size == size)
        ):
            fresh += 1
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.part{os.getpid()}")
        try:
            got = 0
            with urllib.request.urlopen(url, timeout=timeout) as resp, open(tmp, "wb") as out:
                while chunk := resp.read(CHUNK):
                    out.write(chunk)
                    got += len(chunk)
            if isinstance(size, int) and got != size:
                raise OSError(f"got {got} bytes of {size}")
            os.replace(tmp, dest)
        except Exception as exc:
            raise FetchError(f"data {name}: {key}: {describe(exc, url)}") from None
        finally:
            tmp.unlink(missing_ok=True)
        manifest[key] = {"size": size, "etag": etag}
        write_manifest(manifest_path, manifest)
        log(f"data {name}: {key} ({got} bytes)")
        fetched += 1
        total += got
    return fetched, total, fresh
