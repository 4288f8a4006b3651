"""The engine's one error type for bad input: what was wrong, where, and what to do."""

from __future__ import annotations


class InputError(Exception):
    """Bad input that the user can fix. Shown as a message, never as a traceback.

    Args:
        message: what is wrong, in words a GIS analyst understands.
        layer: the layer or file concerned, if any.
        field: the field concerned, if any.
        hint: what to do about it.
    """

    def __init__(
        self,
        message: str,
        *,
        layer: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.layer = layer
        self.field = field
        self.hint = hint
        super().__init__(self.describe())

    def describe(self) -> str:
        where = []
        if self.layer:
            where.append(f"layer '{self.layer}'")
        if self.field:
            where.append(f"field '{self.field}'")
        text = (", ".join(where) + ": " if where else "") + self.message
        if self.hint:
            text += f" {self.hint}"
        return text

    def to_dict(self) -> dict:
        return {
            "message": self.describe(),
            "layer": self.layer,
            "field": self.field,
            "hint": self.hint,
        }
