"""BPMT: Body Part as Modality Transformer for skeleton-based gait recognition."""

__version__ = "0.1.0"
