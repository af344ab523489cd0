"""Evaluation: metrics, baselines on window aggregates, and drift between scoring runs."""
