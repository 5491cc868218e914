"""Observability: Prometheus metrics, structured JSON logs and the request-context middleware."""
