"""One exception type for bad user input, so commands can report it as a single line."""


class InputError(Exception):
    """Bad input (file, config or data) described in one line: the file and the problem."""

    def __init__(self, source: object, problem: str) -> None:
        self.source = str(source)
        self.problem = problem
        super().__init__(f"{source}: {problem}")

    def __reduce__(self):  # picklable, so errors travel back from worker processes
        return type(self), (self.source, self.problem)
