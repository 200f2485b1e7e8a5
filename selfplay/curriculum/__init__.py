"""Pool, seeds, run-directory files, export and report."""
