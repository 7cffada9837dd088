"""The HTTP API: an OpenAI-compatible surface under /v1 (and, later, native routes under /api)."""
