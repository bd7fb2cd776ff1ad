"""Counting what a model costs: parameters (and FLOPs)."""

from clipadapt.analysis.params import summary

__all__ = ["summary"]
