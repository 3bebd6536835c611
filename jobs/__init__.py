"""Scheduled work inside ``klinestore run``: DataQual, reconciliation, gap records, alerts, tables.

Pure cores (tested without sockets): ``dataqual`` (the score), ``compare`` (the seed's field
tolerances), ``reconcile`` (what to compare with what), ``gaps.split_gap``/``GapBook``,
``alerts`` rules, ``depth.new_resyncs``, ``heartbeat.lateness_s``/``collect_health``.
Thin async glue: ``scheduler`` (APScheduler 3, no overlap, failures counted), ``reconciler``,
``depth.DepthChecker``, ``gaps.GapKeeper``, ``heartbeat.QualityMonitor``, ``drain``, and
``quality.QualityJobs``, which the service composes. See ``docs/jobs.md``.
"""
