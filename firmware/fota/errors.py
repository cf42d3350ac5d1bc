"""The one exception of a failed update (imported by the engine and the decoders alike)."""


class UpdateError(Exception):
    """An update that failed: `step` is CTWing's step code (-1..-4), `reason` says why."""

    def __init__(self, step, reason):
        super().__init__(reason)
        self.step = step
        self.reason = reason
