"""Budgets, spend anomalies and their alerts (issue 12).

Pure rule evaluation lives in ``budgets`` and ``anomalies``; ``spend`` reads the archive
(and today's partial spend); ``store`` keeps the ``alerts`` table and the per-notifier
sent marks; ``check`` ties them together for ``openrouter-archive alerts check`` and the
daemon. ``config`` parses ``[alerts]`` (imported by ``etl.config``, so it stays light).
"""
