"""The web UI served under ``/ui`` (server-rendered pages, no build step)."""
