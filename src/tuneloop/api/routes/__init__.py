"""Thin route handlers: parse, call a service, shape the answer."""
