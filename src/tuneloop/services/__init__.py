"""Use cases shared by the CLI, the API and the UI: they touch the store and call the engine."""


class ServiceError(Exception):
    """A request that cannot be done: HTTP-like status, a message that says what and where, the field."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
