"""sockbench's load generator, runner, monitors and reports (``bench`` command)."""
