"""A throwaway S3-compatible server for the black-box tests of the `s3://` Parquet target.

`S3Server` runs `s3s-fs` (crates.io, `--features binary`), an S3 server that keeps the
objects in a folder on disk: it listens on a free 127.0.0.1 port, checks SigV4 signatures
against one fixed pair of test credentials, and takes path-style requests only (no
`--domain` is given). Its folder lives under the test's tmp_path and outlives the process,
so `stop()` then `start()` (or `kill()` then `start()`) brings the same objects back on the
same port: that is how the tests simulate an outage of the store.

What the tests rely on about s3s-fs 0.14 (checked by hand with pyarrow and signed requests):
- PutObject, Get/HeadObject, ListObjects(V2), DeleteObject(s), CopyObject, Create/Head/
  DeleteBucket, and multipart uploads (CreateMultipartUpload, UploadPart, ListParts,
  CompleteMultipartUpload, AbortMultipartUpload) work; an object appears only when its
  PUT or its CompleteMultipartUpload is done (written to a temporary file, then renamed).
- ListMultipartUploads is not implemented (501 NotImplemented). The uploads begun and
  neither completed nor aborted are read from the server's folder instead: each has a
  `.upload-{id}.json` there (`open_multipart_uploads()`). The parts and metadata also live
  at the top of that folder, never inside a bucket's folder, so they are never listed as
  objects.
- HeadObject on a "folder" (a key prefix) answers 500, so datasets are read from an
  explicit list of object keys, never by handing pyarrow a prefix to stat.

The binary is $FLOODWAY_TEST_S3S_FS, else target/tools/bin/s3s-fs of this repository
(where scripts/test installs it), else s3s-fs on PATH.

The server logs every request's S3 operation (`RUST_LOG=s3s::ops=debug`), which
`operations()` reads: the tests use it to tell a multipart upload from a single PUT.

Every wait is bounded; the process is killed at teardown (`kill()` / the fixture).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from harness import REPO_ROOT, free_port, normalize_column, port_is_open

BUCKET = "floodway-test"
ACCESS_KEY = "FWTESTACCESSKEY0001"
# Distinctive (the leak tests search logs for it), with the '/' and '+' real AWS secrets have.
SECRET_KEY = "fwTest/Secret+Key-9c41e7d2b8a6"
REGION = "us-east-1"

START_TIMEOUT = 15.0  # seconds for s3s-fs to listen
STOP_TIMEOUT = 15.0  # seconds for s3s-fs to exit after SIGINT (its graceful stop waits <= 10 s)

_ROUTE = re.compile(r"resolved route, op: (\w+), s3_path: (.*)$")


class S3Error(RuntimeError):
    """s3s-fs could not be found, started or stopped."""


def find_s3s_fs() -> Path | None:
    """The s3s-fs binary to run, or None when there is none."""
    env = os.environ.get("FLOODWAY_TEST_S3S_FS")
    if env:
        return Path(env)
    local = REPO_ROOT / "target" / "tools" / "bin" / "s3s-fs"
    if os.access(local, os.X_OK):
        return local
    found = shutil.which("s3s-fs")
    return Path(found) if found else None


def join_key(*parts: str) -> str:
    """Object key (or key prefix) made of `parts`, skipping empty ones: ("", "s") -> "s"."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def is_hidden_key(key: str) -> bool:
    """A key whose last segment starts with `_` or `.` (work in progress, or a marker)."""
    return key.rsplit("/", 1)[-1].startswith(("_", "."))


class S3Server:
    """One s3s-fs process on 127.0.0.1 with a folder of its own; see the module docstring."""

    def __init__(
        self,
        root: Path,
        *,
        port: int | None = None,
        access_key: str = ACCESS_KEY,
        secret_key: str = SECRET_KEY,
        binary: Path | None = None,
    ) -> None:
        found = binary or find_s3s_fs()
        if found is None:
            raise S3Error(
                "s3s-fs not found: run scripts/test (it installs it into target/tools), "
                "or set FLOODWAY_TEST_S3S_FS to an s3s-fs binary (cargo install s3s-fs "
                "--features binary)"
            )
        self.binary = found
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.objects_dir = self.root / "objects"  # s3s-fs's ROOT: one folder per bucket
        self.objects_dir.mkdir(exist_ok=True)
        self.port = port if port is not None else free_port()
        self._fixed_port = port is not None
        self.access_key = access_key
        self.secret_key = secret_key
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._ever_started = False

    def __enter__(self) -> S3Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- process ---------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.root / "s3s-fs.log"

    def _argv(self) -> list[str]:
        return [
            str(self.binary),
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--access-key", self.access_key,
            "--secret-key", self.secret_key,
            str(self.objects_dir),
        ]  # fmt: skip

    def start(self, timeout: float = START_TIMEOUT) -> S3Server:
        """Start (again) on this server's port and wait until it accepts connections.

        Only a first start moves to another port when the free one was taken meanwhile;
        a restart keeps its port, as a store coming back after an outage does.
        """
        assert not self.running(), "s3s-fs already running"
        for attempt in range(3):
            self.starts += 1
            env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RUST_LOG"))}
            env["RUST_LOG"] = "error,s3s::ops=debug"
            with open(self.log_path, "ab") as log:
                log.write(f"--- start {self.starts} on port {self.port} ---\n".encode())
                log.flush()
                self.proc = subprocess.Popen(
                    self._argv(),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=log,
                    cwd=self.root,
                    env=env,
                )
            if self._wait_listening(timeout):
                self._ever_started = True
                return self
            in_use = "Address already in use" in self.log(tail=2000)
            self.kill()
            if in_use and attempt < 2 and not self._ever_started and not self._fixed_port:
                self.port = free_port()
                continue
            raise S3Error(
                f"s3s-fs did not listen on {self.endpoint} within {timeout}s\n{self.log()}"
            )
        raise AssertionError("unreachable")

    def _wait_listening(self, timeout: float) -> bool:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        for _ in range(int(timeout / 0.02) + 1):
            if self.proc.poll() is not None:
                return False
            if port_is_open(self.port):
                return True
            if time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        return False

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Ctrl-C (SIGINT: s3s-fs's graceful stop), bounded; SIGKILL if it lingers.

        The folder stays: a later `start()` serves the same buckets and objects.
        """
        if self.running():
            assert self.proc is not None
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        """SIGKILL (if still running), reap, and wait until the port is closed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        deadline = time.monotonic() + 5
        for _ in range(100):
            if not port_is_open(self.port) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)

    def log(self, tail: int = 6000) -> str:
        if not self.log_path.exists():
            return ""
        text = self.log_path.read_bytes().decode(errors="replace")
        return f"--- s3s-fs log ({self.log_path}) ---\n{text[-tail:]}"

    def operations(self) -> list[tuple[str, str]]:
        """(operation, s3 path) of every request the server routed so far, in order.

        E.g. ("UploadPart", 'Object { bucket: "b", key: "p/s/x.parquet" }').
        """
        if not self.log_path.exists():
            return []
        out = []
        for line in self.log_path.read_bytes().decode(errors="replace").splitlines():
            match = _ROUTE.search(line)
            if match:
                out.append((match.group(1), match.group(2)))
        return out

    def operation_counts(self) -> Counter[str]:
        return Counter(op for op, _ in self.operations())

    def open_multipart_uploads(self) -> list[str]:
        """Ids of the multipart uploads begun and neither completed nor aborted.

        s3s-fs has no ListMultipartUploads; it keeps a `.upload-{id}.json` per open upload
        at the top of its folder and deletes it on Complete/AbortMultipartUpload.
        """
        return sorted(
            p.name[len(".upload-") : -len(".json")] for p in self.objects_dir.glob(".upload-*.json")
        )

    # -- S3 client (pyarrow) ---------------------------------------------------------

    def filesystem(self, **kwargs: Any) -> pafs.S3FileSystem:
        """A pyarrow S3 client of this server: path-style (no virtual addressing), plain HTTP."""
        options: dict[str, Any] = {
            "endpoint_override": self.endpoint,
            "scheme": "http",
            "access_key": self.access_key,
            "secret_key": self.secret_key,
            "region": REGION,
            "force_virtual_addressing": False,
            "connect_timeout": 5,
            "request_timeout": 30,
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=3),
        }
        options.update(kwargs)
        return pafs.S3FileSystem(**options)

    def create_bucket(self, name: str = BUCKET) -> None:
        self.filesystem(allow_bucket_creation=True).create_dir(name)

    def list_objects(self, bucket: str = BUCKET, prefix: str = "") -> list[str]:
        """Keys of every object in `bucket` under the folder `prefix`, sorted; [] if none.

        Listed with ListObjectsV2 through pyarrow. An empty prefix lists the whole bucket.
        """
        fs = self.filesystem()
        base = join_key(bucket, prefix)
        selector = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        keys = []
        for info in fs.get_file_info(selector):
            if info.type == pafs.FileType.File:
                keys.append(info.path[len(bucket) + 1 :])
        return sorted(keys)

    def committed_parquet_keys(self, bucket: str, prefix: str, stream: str) -> list[str]:
        """Keys of the committed Parquet files of a stream: `part-*.parquet` under
        `{prefix}/{stream}/`, no segment below that starting with `_` or `.`."""
        base = join_key(prefix, stream)
        out = []
        for key in self.list_objects(bucket, base):
            rel = key[len(base) + 1 :] if base else key
            parts = rel.split("/")
            if any(p.startswith(("_", ".")) for p in parts):
                continue
            if re.fullmatch(r"part-.*\.parquet", parts[-1]):
                out.append(key)
        return out

    def read_dataset_rows(self, bucket: str, prefix: str, stream: str) -> list[dict[str, Any]]:
        """Every row of the stream's committed Parquet files, read back through S3.

        pyarrow.dataset reads the files listed by `committed_parquet_keys` with Hive
        partitioning based at `{bucket}/{prefix}/{stream}`, so each row also has the
        partition columns `date` (string YYYY-MM-DD) and `hour` (int). Values are
        normalized as by harness.normalize_column (timestamps as integer microseconds).
        """
        keys = self.committed_parquet_keys(bucket, prefix, stream)
        if not keys:
            return []
        base = join_key(bucket, prefix, stream)
        dataset = ds.dataset(
            [join_key(bucket, k) for k in keys],
            filesystem=self.filesystem(),
            format="parquet",
            partitioning=ds.partitioning(flavor="hive"),
            partition_base_dir=base,
        )
        table = dataset.to_table()
        columns = {name: normalize_column(table.column(name)) for name in table.column_names}
        return [
            {name: values[i] for name, values in columns.items()} for i in range(table.num_rows)
        ]

    def object_size(self, bucket: str, key: str) -> int:
        info = self.filesystem().get_file_info(join_key(bucket, key))
        assert info.type == pafs.FileType.File, info
        return int(info.size)

    def read_object(self, bucket: str, key: str) -> bytes:
        with self.filesystem().open_input_stream(join_key(bucket, key)) as stream:
            return bytes(stream.read())

    def parquet_metadata(self, bucket: str, key: str) -> pq.FileMetaData:
        return pq.ParquetFile(join_key(bucket, key), filesystem=self.filesystem()).metadata

    def dead_letter_keys(self, bucket: str, prefix: str, stream: str) -> list[str]:
        """Keys of the committed dead-letter files of a stream:
        `{prefix}/_dead_letter/{stream}/date=YYYY-MM-DD/*.ndjson`, hidden names left out."""
        base = join_key(prefix, "_dead_letter", stream)
        return [
            key
            for key in self.list_objects(bucket, base)
            if key.endswith(".ndjson") and not is_hidden_key(key)
        ]

    def read_dead_letters(self, bucket: str, prefix: str, stream: str) -> list[dict[str, Any]]:
        """Every dead-letter record of a stream (one JSON object a line), read through S3."""
        records = []
        for key in self.dead_letter_keys(bucket, prefix, stream):
            for line in self.read_object(bucket, key).decode().splitlines():
                if line.strip():
                    records.append(json.loads(line))
        return records
