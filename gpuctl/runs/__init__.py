"""A run's life, one job per module: its status and the moves allowed between them."""
