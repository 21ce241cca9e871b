"""Expected failures, each reported as one line with an exit code a script can act on.

Exit codes: 0 everything done; 2 bad input or nothing done (:class:`InputError`); 3 some
items (scenes) failed and the rest are done (:class:`PartialFailure`).
"""

INPUT_ERROR_EXIT = 2
PARTIAL_FAILURE_EXIT = 3


class InputError(Exception):
    """Bad input (file, config or data) described in one line: the file and the problem."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):  # picklable, so errors travel back from worker processes
        return type(self), (self.source, self.problem)


class PartialFailure(Exception):
    """Some items of a batch failed (each reported as it happened); the others are done."""


def some_failed(failed: dict[str, str], total: int) -> PartialFailure:
    """The failure of ``len(failed)`` of ``total`` items (scenes), naming the first problem."""
    first = next(iter(failed.values()))
    return PartialFailure(f"{len(failed)} of {total} scenes failed (first: {first})")
