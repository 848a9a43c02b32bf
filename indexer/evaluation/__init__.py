"""Evaluation of typed-entity retrieval: benchmark from labelled data, metrics, baselines, reports.

``nerindex eval`` (``commands``) wires it together; ``run`` holds one evaluation run: the
``methods`` it scores, their ``rankings`` (system through the real store, ``baselines`` beside it),
``scoring`` per type and group, with the ``seen_types`` of the model's training record. ``metrics``,
``familiarity`` and ``calibration`` are pure and unit-tested; ``benchmark_io`` reads labelled data
and reads/writes the BEIR-style folder; ``report`` renders JSON, Markdown and PNG charts.
"""
