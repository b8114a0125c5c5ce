"""Measurement: everything that runs a model to measure its heads (head_stats, scan, atlas roles,
recording head outputs). Built on the engine and the plug-ins (probes, edits, patterns)."""
