"""State carried between interactions: small pydantic models serialised to JSON."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class RequestRef(BaseModel):
    """A button's value and the reject modal's private_metadata: which request, which content."""

    model_config = ConfigDict(frozen=True)

    r: int  # request id
    h: str  # the content hash the request was made for (first 12 chars)
    u: int | None = None  # the test run the message showed (an override binds to it)


class RejectContext(RequestRef):
    """A reason modal's private_metadata (reject, override): the request, and the channel
    to answer in."""

    c: str | None = None  # channel id
