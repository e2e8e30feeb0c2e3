"""Study storage: storage URLs -> Optuna RDB storage with the right defaults for SQLite and PostgreSQL."""
