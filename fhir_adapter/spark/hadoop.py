"""The driver's handle on Hadoop file systems (through the Spark JVM): list, peek, read, write, delete.

Every path or URI Spark can read works here too (``file:``, ``hdfs://``, ``s3a://``, ``abfss://``,
``gs://`` with their connectors on the classpath). Only the driver uses this; executors read through
Spark's file sources.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fhir_adapter.output.private import write_private_bytes
from fhir_adapter.source.reader import irregular
from fhir_adapter.spark.inputs import Entry


def write_private(path: Path, data: bytes) -> None:
    """Atomically (temporary file + rename), readable by the owner only (0600; new folders 0700)."""
    write_private_bytes(path, data)


class HadoopFs:
    def __init__(self, spark: Any) -> None:
        self._sc = spark.sparkContext
        self._jvm = self._sc._jvm
        self._conf = self._sc._jsc.hadoopConfiguration()

    def _path(self, path: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(path)

    def _fs(self, jpath: Any) -> Any:
        return jpath.getFileSystem(self._conf)

    def qualify(self, path: str) -> str:
        jpath = self._path(path)
        return str(self._fs(jpath).makeQualified(jpath).toString())

    def stat(self, path: str) -> Entry | None:
        jpath = self._path(path)
        fs = self._fs(jpath)
        try:
            status = fs.getFileStatus(jpath)
        except Exception as exc:  # py4j wraps java.io.FileNotFoundException
            if "FileNotFoundException" in type(exc).__name__ or "FileNotFoundException" in str(exc):
                return None
            raise
        return self._entry(status)

    def children(self, uri: str) -> list[Entry]:
        jpath = self._path(uri)
        return [self._entry(s) for s in self._fs(jpath).listStatus(jpath)]

    def _entry(self, status: Any) -> Entry:
        jpath = status.getPath()
        return Entry(
            str(jpath.toString()), str(jpath.getName()), bool(status.isDirectory()), int(status.getLen())
        )

    def head(self, uri: str, n: int) -> bytes:
        jpath = self._path(uri)
        stream = self._fs(jpath).open(jpath)
        try:
            return bytes(stream.readNBytes(n))
        finally:
            stream.close()

    def read(self, uri: str) -> bytes:
        jpath = self._path(uri)
        stream = self._fs(jpath).open(jpath)
        try:
            return bytes(stream.readAllBytes())
        finally:
            stream.close()

    def write(self, uri: str, data: bytes) -> None:
        """Write a small file (the manifest) so that readers see the old one or the new one.

        Locally: a temporary file (mode 0600) renamed over the old one. On object stores a single
        object written in one request is atomic already; on HDFS the write is plain (documented).
        """
        local = self.local_path(uri)
        if local is not None:
            write_private(local, data)
            return
        final = self._path(uri)
        stream = self._fs(final).create(final, True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def local_path(self, uri: str) -> Path | None:
        """The local path of a ``file:`` URI (or a plain path), None for any other file system."""
        jpath = self._path(uri)
        qualified = self._fs(jpath).makeQualified(jpath).toUri()
        if str(qualified.getScheme()) != "file":
            return None
        return Path(str(qualified.getPath()))

    def special(self, uri: str) -> str | None:
        local = self.local_path(uri)
        if local is None:
            return None  # object stores and HDFS hold files and folders only
        try:
            mode = local.stat().st_mode
        except OSError:
            return None  # gone or unreadable: reading it says so
        return irregular(mode)

    def delete(self, uri: str) -> None:
        jpath = self._path(uri)
        self._fs(jpath).delete(jpath, True)

    def exists(self, uri: str) -> bool:
        jpath = self._path(uri)
        return bool(self._fs(jpath).exists(jpath))

    def spark_path(self, uri: str) -> str:
        """The path as Spark's ``_metadata.file_path`` spells it (URL-encoded)."""
        return str(self._jvm.org.apache.spark.paths.SparkPath.fromPath(self._path(uri)).urlEncoded())
