"""Inbound dialects: each parses its wire format into :mod:`tiergate.types` and renders the results back."""
