"""Distillation methods (how a student learns from teachers) and their losses."""
