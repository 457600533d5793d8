"""Cloud drivers: one module per provider, the same few verbs each (see base.py)."""
