"""The one error a request can end in before the model runs, and its JSON body."""

from __future__ import annotations


class ClientError(Exception):
    """A request the client has to fix (or a busy server, 503); becomes ``{"error": {...}}`` with ``status``."""

    def __init__(self, message: str, status: int = 400, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message, self.status, self.type, self.param, self.code = message, status, type, param, code
        self.headers = headers


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
