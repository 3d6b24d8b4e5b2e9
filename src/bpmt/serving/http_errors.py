"""How `bpmt serve` answers failures: every error as `{"detail": "..."}`, with a status that says
whose fault it is (409 gallery of another model or empty, 503 gallery unreadable, 422 bad input);
bad input never gives a 500."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import BPMTError
from . import gallery as store
from .http_requests import describe_errors
from .http_service import EmptyGallery

ROUTES = "POST /enroll, POST /identify, GET /gallery, GET /health, GET /docs, GET /openapi.json"


def install_error_handlers(app: FastAPI) -> None:
    """Every error as `{"detail": "..."}` with a status that says whose fault it is."""

    def error(status: int, detail: str, headers: dict | None = None) -> JSONResponse:
        printable = detail.encode("utf-8", "backslashreplace").decode("utf-8")    # details may echo client text
        return JSONResponse({"detail": printable}, status_code=status, headers=headers)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"no such endpoint: {request.method} {request.url.path} (endpoints: {ROUTES})"
        elif exc.status_code == 405 and detail == "Method Not Allowed":
            detail = f"{request.url.path} does not take {request.method} (endpoints: {ROUTES})"
        return error(exc.status_code, str(detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error(422, "request: " + describe_errors(list(exc.errors())))

    @app.exception_handler(store.ModelMismatchError)
    async def mismatch(request: Request, exc: store.ModelMismatchError) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(EmptyGallery)
    async def empty(request: Request, exc: EmptyGallery) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(store.GalleryError)
    async def unreadable(request: Request, exc: store.GalleryError) -> JSONResponse:
        return error(503, f"gallery unavailable: {exc}")

    @app.exception_handler(BPMTError)
    async def bad_input(request: Request, exc: BPMTError) -> JSONResponse:
        return error(422, str(exc))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        return error(500, f"internal error ({type(exc).__name__}); see the server log")
