"""The Spark plan of one screen: the local engine's two passes, with a shuffle instead of an index.

0. The JVM counts every block's lines of the plain NDJSON files, so the passes know true line numbers.
1. Pass 1 (only when a gate can reject patients): the lines that mention a gate's resource type (the
   local line filter, applied in the JVM) and the whole files; per patient, how many resources of the
   gate's types it has and whether one is admitted (``reduceByKey``). The candidates' ids are collected
   (a few percent of the patients) and broadcast.
2. Pass 2: every line and file, with the local reader's functions. What it yields is persisted:
   problems and line counts (collected), patients, the candidates' resources, the Medications.
3. The candidates' resources are grouped by patient with the Medications they reference (``cogroup``,
   a shuffle); each record is assembled and screened on an executor, as are the other patients' stubs.
4. Results are sorted by patient id (``sortByKey``) and written as one folder of NDJSON part files per
   trial; the summary counts are made per partition and added up on the driver.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from fhir_adapter.model import InputProblem
from fhir_adapter.output.result_file import Tally
from fhir_adapter.screening import Screener
from fhir_adapter.source.copies import medication_conflict
from fhir_adapter.source.intake import unlisted
from fhir_adapter.source.patient_index import line_filter
from fhir_adapter.spark import partitions as part
from fhir_adapter.spark.hadoop import HadoopFs
from fhir_adapter.spark.inputs import InputPlan

log = logging.getLogger(__name__)
_GLOB = re.compile(r"([\\*?\[\]{}])")


@dataclass(frozen=True, slots=True)
class JobResult:
    problems: list[InputProblem]
    resources_read: int
    skipped_types: Counter[str]  # resources of types no criterion reads, by type (as locally)
    tallies: list[Tally]
    parts: list[list[str]]  # per trial, the part files in patient order


def literal(uri: str) -> str:
    """A file path Spark's readers take literally (they expand glob characters otherwise)."""
    return _GLOB.sub(r"\\\1", uri)


def run_job(spark: Any, plan: InputPlan, screener: Screener, parts_uris: Sequence[str]) -> JobResult:
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    sc = spark.sparkContext
    fs = HadoopFs(spark)
    gate = screener.gate
    started = time.monotonic()
    lines_files = plan.by_how("lines")
    block_files = plan.by_how("whole")
    driver_files = plan.by_how("driver")
    ctx = part.ReadContext(
        by_path={fs.spark_path(f.uri): (f.index, f.display, f.name) for f in (*lines_files, *block_files)},
        by_index={f.index: (f.display, f.name) for f in plan.files},
        types=screener.needed_types | {"Patient", "Medication"},
        gate=gate,
        line_filter=None if gate.everyone else line_filter(gate.types),
    )
    lines = None
    if lines_files:
        lines = spark.read.option("lineSep", "\n").text([literal(f.uri) for f in lines_files])
        # Line numbers: every block's line count first (the JVM alone, no Python), so that pass 2 cites
        # lines exactly as the local reader counts them.
        counted = lines.groupBy(F.col("_metadata.file_path"), F.col("_metadata.file_block_start")).count()
        ctx = replace(ctx, before=part.line_counts(tuple(r) for r in counted.collect()))
        log.info("lines counted in %d block(s) (%.1f s)", len(ctx.before or ()), time.monotonic() - started)
    ctx_bc = sc.broadcast(ctx)
    screener_bc = sc.broadcast(screener)
    broadcasts = [ctx_bc, screener_bc]
    keep = StorageLevel.MEMORY_AND_DISK
    persisted: list[Any] = []
    whole = None
    if block_files or driver_files:
        rdds = []
        if block_files:
            df = spark.read.format("binaryFile").load([literal(f.uri) for f in block_files])
            rows = df.select("content", F.col("_metadata.file_path")).rdd
            rdds.append(rows.map(lambda r: (ctx_bc.value.by_path[r[1]][0], r[0])))
        if driver_files:
            # Names Spark's file sources skip: the driver reads them (bounded by the planner).
            rdds.append(sc.parallelize([(f.index, fs.read(f.uri)) for f in driver_files], len(driver_files)))
        whole = sc.union(rdds) if len(rdds) > 1 else rdds[0]

    try:
        counts = None
        candidates: frozenset[str] | None = None
        if not gate.everyone:
            gated = []
            if lines is not None:
                wanted = functools.reduce(
                    lambda a, b: a | b, [F.col("value").contains(f.decode()) for f in ctx.line_filter or ()]
                )
                values = lines.where(wanted).select(F.col("value").cast("binary")).rdd.map(lambda r: r[0])
                gated.append(values.mapPartitions(lambda it: part.gate_lines(it, ctx_bc.value)))
            if whole is not None:
                gated.append(whole.mapPartitions(lambda it: part.gate_whole(it, ctx_bc.value)))
            counts = _union(sc, gated).reduceByKey(part.merge_gate).persist(keep)
            persisted.append(counts)
            candidates = frozenset(counts.filter(lambda kv: kv[1][1]).keys().collect())
            log.info("pass 1: %d candidate(s) (%.1f s)", len(candidates), time.monotonic() - started)
        cand_bc = sc.broadcast(candidates)
        broadcasts.append(cand_bc)

        read = []
        if lines is not None:
            rows = lines.select(
                F.col("value").cast("binary"),
                F.col("_metadata.file_path"),
                F.col("_metadata.file_block_start"),
            ).rdd
            read.append(rows.mapPartitions(lambda it: part.read_lines(it, ctx_bc.value, cand_bc.value)))
        if whole is not None:
            read.append(whole.mapPartitions(lambda it: part.read_whole(it, ctx_bc.value, cand_bc.value)))
        out = _union(sc, read).persist(keep)
        persisted.append(out)
        keyed, resources_read, skipped, seen = part.small_outputs(
            out.filter(lambda o: o[0] in part.SMALL).collect()
        )
        keyed.extend(((i, 0, 0), p) for i, p in plan.problems)
        seen |= {ctx.by_path[path][0] for path, _ in ctx.before or {} if path in ctx.by_path}
        keyed.extend(
            ((f.index, -1, 0), InputProblem(f.display, "not read: Spark's file source left this file out"))
            for f in plan.files
            if f.index not in seen and (f.how != "lines" or f.size > 0)
        )
        keyed.sort(key=lambda kv: kv[0])
        log.info("pass 2: %d resource(s) read (%.1f s)", resources_read, time.monotonic() - started)

        res = out.filter(lambda o: o[0] == "res").map(lambda o: (o[1], (o[2], o[3])))
        meds = (
            out.filter(lambda o: o[0] == "med")
            .map(lambda o: (o[1], (o[2], o[3])))
            .groupByKey()
            .mapValues(part.kept_copy)
            .persist(keep)  # read twice: the records' join and the copies' conflicts
        )
        persisted.append(meds)
        wanted_meds = out.filter(lambda o: o[0] == "medref").map(lambda o: (o[1], o[2])).distinct()
        pid_meds = wanted_meds.join(meds).map(lambda kv: (kv[1][0], (kv[0], kv[1][1][1])))
        evaluated = res.cogroup(pid_meds).map(
            lambda kv: (kv[0], part.evaluate_candidate(kv[0], kv[1][0], kv[1][1], screener_bc.value))
        )
        if counts is not None:
            patients = out.filter(lambda o: o[0] == "patient").map(lambda o: (o[1], None)).distinct()
            others = patients.filter(lambda kv: kv[0] not in cand_bc.value)
            stubs = others.leftOuterJoin(counts.mapValues(lambda v: v[0])).map(
                lambda kv: (kv[0], part.evaluate_stub(kv[0], kv[1][1], screener_bc.value))
            )
            evaluated = evaluated.union(stubs)
        evaluated = evaluated.persist(keep)
        persisted.append(evaluated)

        failed = evaluated.filter(lambda kv: bool(kv[1][1])).map(lambda kv: (kv[0], kv[1][1])).collect()
        log.info("records screened (%.1f s)", time.monotonic() - started)
        # After pass 2's problems and before the unlisted patients, as the local index reports them.
        conflicts = sorted(meds.flatMap(lambda kv: [(pos, kv[0]) for pos in kv[1][2]]).collect())
        problems = [p for _, p in keyed] + [medication_conflict(key) for _, key in conflicts]
        problems += _unlisted(out, cand_bc)
        problems += [p for _, own in sorted(failed, key=lambda kv: kv[0]) for p in own]

        # Range-partitioned by patient id: part i holds ids below part i+1's, each part sorted.
        subjects = evaluated.filter(lambda kv: kv[1][0] is not None)
        subjects = subjects.sortByKey(numPartitions=max(1, sc.defaultParallelism)).persist(keep)
        persisted.append(subjects)
        trials = len(screener.trials)
        tallies = part.merge_tallies(
            subjects.mapPartitions(lambda it: part.tally(it, trials)).collect(), trials
        )
        written = []
        for t, uri in enumerate(parts_uris):
            subjects.map(lambda kv, t=t: kv[1][0][t].decode("utf-8")).saveAsTextFile(uri)
            written.append(_part_names(fs, uri))
        log.info("results written (%.1f s)", time.monotonic() - started)
        return JobResult(problems, resources_read, skipped, tallies, written)
    finally:
        for rdd in persisted:
            rdd.unpersist()
        for bc in broadcasts:
            bc.destroy()


def _unlisted(out: Any, cand_bc: Any) -> list[InputProblem]:
    """The local index's count of patients with resources but no Patient resource and no candidate's."""
    listed = out.filter(lambda o: o[0] == "patient").map(lambda o: o[1])
    others = out.filter(lambda o: o[0] == "others").flatMap(lambda o: o[1]).distinct()
    count = (
        others.subtract(listed).filter(lambda pid: cand_bc.value is None or pid not in cand_bc.value).count()
    )
    return [unlisted(count)] if count else []


def _union(sc: Any, rdds: list[Any]) -> Any:
    if not rdds:
        return sc.emptyRDD()
    return rdds[0] if len(rdds) == 1 else sc.union(rdds)


def _part_names(fs: HadoopFs, uri: str) -> list[str]:
    return sorted(e.name for e in fs.children(uri) if e.name.startswith("part-") and not e.is_dir)
