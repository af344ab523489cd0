"""Features computed from a panel: window aggregates (one definition for the model and the
baselines) and the preprocessing fitted on training rows."""
