"""``python -m task_framework`` runs the CLI."""

from task_framework.cli.main import main

main()
