"""Classifiers fit on frozen features. Each is a pure function of arrays."""
