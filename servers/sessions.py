"""The session services in one place: which session and which blocking handler serves ``http`` and ``timeauth``.

The models import their session factory (:func:`new_session`) and their
handler map (:data:`HANDLERS`, the shared handlers of :mod:`servers.handlers`
plus these two) from here, so the service modules build on the shared ones
and nothing below them imports them back.
"""

from __future__ import annotations

import socketserver

from servers import handlers, service
from servers.exchange import Session
from servers.http_service import HTTPHandler, HTTPSession
from servers.timeauth import Credentials, TimeAuthHandler, TimeAuthSession

#: Services run as sessions by the event-loop models.
SESSION_SERVICES = ("http", "timeauth")

#: Handler class per service name, for the socketserver models.
HANDLERS: dict[str, type[socketserver.BaseRequestHandler]] = {
    **handlers.HANDLERS,
    "http": HTTPHandler,
    "timeauth": TimeAuthHandler,
}

# timeauth's logins are read when the service is built, before anything listens.
service.START_UP["timeauth"] = lambda options: Credentials.load(options.credentials)


def new_session(serving: service.Service) -> Session:
    """A fresh session of ``serving`` (``http`` or ``timeauth``) for one connection."""
    if serving.name == "http":
        assert serving.root is not None  # checked at start-up
        return HTTPSession(serving.root)
    if serving.name == "timeauth":
        assert serving.credentials is not None  # checked at start-up
        return TimeAuthSession(serving.credentials)
    raise ValueError(f"{serving.name!r} is not a session service; session services: {', '.join(SESSION_SERVICES)}")
