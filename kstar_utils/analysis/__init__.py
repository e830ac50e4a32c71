"""Analyses built on k*: who fractures whom (fracture)."""
