"""The JSON bodies of `bpmt serve`: request and response models, the schema at /openapi.json.

The endpoints read their request bodies themselves (to check size and content type first, and to
name frames and joints in errors), so the request models reach the OpenAPI schema through
`openapi_with_requests` and the `*_BODY` descriptions, not through FastAPI's signature parsing.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from ..skeleton import NUM_JOINTS
from .http_limits import MAX_TOP_K

KEYPOINTS_DOC = ("the pose sequence: T frames, each 17 COCO-17 joints (nose, eyes, ears, shoulders, elbows, "
                 "wrists, hips, knees, ankles) as [x, y, confidence]; x and y in person-crop pixels as in Gait3D "
                 "(the model normalises them). Every value a finite number with |value| <= 1e6; "
                 "T between the server's min_frames and max_frames (GET /health)")
KEYPOINTS_SCHEMA = {
    "type": "array",
    "items": {"type": "array", "minItems": NUM_JOINTS, "maxItems": NUM_JOINTS,
              "items": {"type": "array", "minItems": 3, "maxItems": 3, "items": {"type": "number"}}},
}
# Validated by `bpmt.data.pose_json.parse_pose_json` (messages name the frame and joint), not by pydantic.
Keypoints = Annotated[Any, WithJsonSchema(KEYPOINTS_SCHEMA)]

Label = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f\x7f]+$")]


# ---------------------------------------------------------------------------------------------
# Requests


class EnrollRequest(BaseModel):
    """One pose sequence of a known walker, to store in the gallery."""

    model_config = ConfigDict(extra="forbid", strict=True)
    identity: Label = Field(description="who walks (any label without control characters)")
    name: Label | None = Field(None, description="sequence name, the gallery's key: enrolling a name already "
                                                 "present replaces that entry (default: a new unique name)")
    keypoints: Keypoints = Field(description=KEYPOINTS_DOC)


class IdentifyRequest(BaseModel):
    """One pose sequence of an unknown walker."""

    model_config = ConfigDict(extra="forbid", strict=True)
    keypoints: Keypoints = Field(description=KEYPOINTS_DOC)
    top_k: int = Field(5, ge=1, le=MAX_TOP_K, description="identities to rank")
    threshold: float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="decision threshold (a distance): the best identity is `unknown` above it. Absent: the "
                    "gallery's calibrated threshold (`bpmt calibrate --save-threshold`); null: none")
    name: Label | None = Field(None, description="label of the query in the answer (default: `query`)")


ENROLL_BODY = {"required": True, "content": {"application/json": {
    "schema": {"$ref": "#/components/schemas/EnrollRequest"}}}}
IDENTIFY_BODY = {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/IdentifyRequest"}},
    "multipart/form-data": {"schema": {
        "type": "object", "required": ["video"], "properties": {
            "video": {"type": "string", "format": "binary", "description": "the video file"},
            "top_k": {"type": "integer", "minimum": 1, "maximum": MAX_TOP_K, "default": 5},
            "threshold": {"type": "number", "minimum": 0,
                          "description": "as in JSON; absent: the gallery's; `none`: no threshold"},
        }}}}}


# ---------------------------------------------------------------------------------------------
# Responses


class ErrorResponse(BaseModel):
    detail: str = Field(description="what is wrong, and where (field, frame, joint)")


ERRORS = {code: {"model": ErrorResponse, "description": text} for code, text in {
    400: "body is not valid JSON", 409: "gallery of another model, or empty gallery",
    413: "body, upload or sequence too large", 415: "wrong Content-Type",
    422: "invalid field, shape or value (the detail names the frame and joint)",
    503: "gallery files unreadable"}.items()}
IDENTIFY_ERRORS = {**ERRORS, 501: {"model": ErrorResponse,
                                   "description": "video upload without the video extra installed"}}


class MatchOut(BaseModel):
    rank: int
    identity: str
    distance: float = Field(description="best distance over the identity's enrolled sequences (model metric)")
    sequence: str = Field(description="the enrolled sequence that gave `distance`")


class IdentificationOut(BaseModel):
    query: str
    identity: str | None = Field(description="decided identity; null when unknown")
    unknown: bool = Field(description="true when the best distance is above the threshold")
    distance: float | None = Field(description="the best identity's distance")
    threshold: float | None
    matches: list[MatchOut] = Field(description="best first, at most top_k identities")


class IdentifyResponse(BaseModel):
    generation: int = Field(description="gallery generation searched")
    model: str = Field(description="SHA-256 of the model weights")
    metric: Literal["euc", "cos"]
    source: str
    top_k: int
    results: list[IdentificationOut] = Field(description="one per query sequence (per tracked walker for videos)")


class EnrollResponse(BaseModel):
    identity: str
    sequence: str
    frames: int
    generation: int = Field(description="gallery generation after the enrolment")
    added: int
    replaced: int
    sequences: int = Field(description="sequences in the gallery")
    identities: int = Field(description="identities in the gallery")
    index: str


class GalleryIdentity(BaseModel):
    identity: str
    sequences: int
    enrolled: str = Field(description="last enrolment time (UTC)")


class GalleryResponse(BaseModel):
    gallery: str
    generation: int | None = Field(description="null while nothing is enrolled")
    model: str
    metric: str
    sequences: int
    threshold: float | None
    index: str | None
    updated: str | None
    identities: list[GalleryIdentity]


class LimitsOut(BaseModel):
    max_body_bytes: int
    max_video_bytes: int
    max_frames: int
    min_frames: int
    concurrency: int
    batch: int
    max_top_k: int


class HealthResponse(BaseModel):
    status: Literal["ok"]
    model: str
    metric: str
    gallery: str
    generation: int | None
    sequences: int
    identities: int
    video: bool = Field(description="whether video uploads can be processed (OpenCV and MediaPipe importable)")
    limits: LimitsOut


# ---------------------------------------------------------------------------------------------
# The schema


def openapi_with_requests(app: FastAPI, models: tuple[type[BaseModel], ...] = (EnrollRequest, IdentifyRequest)
                          ) -> dict:
    """FastAPI's schema plus the request models the endpoints read themselves."""
    from fastapi.openapi.utils import get_openapi

    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in models:
            components[model.__name__] = model.model_json_schema(ref_template="#/components/schemas/{model}")
        app.openapi_schema = schema
    return app.openapi_schema
