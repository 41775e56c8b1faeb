"""Evaluate: Dice, centre distances, detection and tracking metrics against ground truth."""
