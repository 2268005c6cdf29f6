"""The Spark engine: the same screening as ``screen`` on files, for exports larger than one machine.

Spark reads the input (any path or URI its file systems support), finds the candidates, groups their
resources by patient (a shuffle) and runs the local engine's own functions on each line and record: the
reader (:mod:`fhir_adapter.source.reader`), the routing (:mod:`fhir_adapter.source.routing`)
and :func:`fhir_adapter.workers.evaluate` (the record, then ``Screener.screen``). Nothing about
criteria lives here. ``pyspark`` is an optional extra: only this package imports it, and only
:mod:`fhir_adapter.spark.run` is imported by the command line, when ``--engine spark`` is asked for.

- :mod:`~fhir_adapter.spark.inputs`: which files, in the local engine's reading order, how each is read;
- :mod:`~fhir_adapter.spark.partitions`: what runs on the executors (plain Python, no Spark);
- :mod:`~fhir_adapter.spark.hadoop` and :mod:`~fhir_adapter.spark.session`: the driver's handles on
  Hadoop file systems and on the Spark session;
- :mod:`~fhir_adapter.spark.job`: the plan (two passes, the shuffle, evaluation, part files);
- :mod:`~fhir_adapter.spark.run`: the ``screen --engine spark`` command (manifest, summary, exit code).
"""
