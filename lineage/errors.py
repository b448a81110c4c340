"""The one exception users see. Everything that is the caller's fault (bad config,
bad file, bad data) becomes a LineageError with a message that names the culprit."""


class LineageError(Exception):
    """A clear, user-facing error: bad input, bad file, bad config."""


class BudgetSpent(LineageError):
    """A suspect's query budget ran out (lineage.remote). Sampling stops at the last batch
    of points it finished; anywhere else it is a plain LineageError."""

    def __init__(self, message: str, budget: int):
        super().__init__(message)
        self.budget = budget
