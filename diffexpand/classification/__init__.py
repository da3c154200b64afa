"""Classifier training on real + synthetic data: mixing, soft targets, and the metrics tables use."""
