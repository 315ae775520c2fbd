"""Evaluator gating: the judge picks what to unlearn (detect), when to stop (early stopping) and which
forget prompts still need it (forget gate)."""
