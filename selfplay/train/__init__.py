"""Advantages (pure), loss (pure torch) and the optimizer step (side effects on the model)."""
