"""Out-of-distribution detection: metrics (:mod:`.metrics`), MLKD distillation (:mod:`.mlkd`), LM scores
(:mod:`.scores`). Importing this package does not import Lightning."""
