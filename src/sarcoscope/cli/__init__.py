"""Command-line interface (typer): see cli/main.py."""
