"""Cluster hardware model, probe and training planner."""
