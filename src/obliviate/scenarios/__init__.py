"""End-to-end scenarios (harmful answers, copyrighted text): recipe schema, pipeline and report."""
