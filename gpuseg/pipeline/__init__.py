"""Stages over run directories (single process and Dask), scoring and run evaluation."""
