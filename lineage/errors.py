"""The one exception users see. Everything that is the caller's fault (bad config,
bad file, bad data) becomes a LineageError with a message that names the culprit."""


class LineageError(Exception):
    """A clear, user-facing error: bad input, bad file, bad config."""
