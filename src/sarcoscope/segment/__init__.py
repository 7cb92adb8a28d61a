"""Segmentation of one axial slice into the four tissue classes (see ``tissues.Tissue``)."""

from sarcoscope.segment.base import Segmenter

__all__ = ["Segmenter"]
