"""Segments: clustering of embeddings, classic operator segments, tags and campaign targets."""
