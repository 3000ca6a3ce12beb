"""Text built from columns (messages, keys).

`fmt` is `pl.format` spelled as `pl.concat_str`: Polars 2.1's streaming engine panics on
`pl.format` after a filter that empties the last chunk of a multi-chunk frame (an assertion
`i < self.len()`), which an error check on a rare condition does routinely; `concat_str`
gives the same text (nulls in, null out) and does not.
"""

from __future__ import annotations

import polars as pl


def fmt(template: str, *args: pl.Expr | str) -> pl.Expr:
    """Like `pl.format(template, *args)`: each `{}` is replaced by the next argument, a column
    name or an expression, as text; named, as pl.format names it, after the first argument."""
    pieces = template.split("{}")
    if len(pieces) != len(args) + 1:
        raise ValueError(f"{template!r} has {len(pieces) - 1} placeholders for {len(args)} arguments")
    parts: list[pl.Expr] = []
    for piece, arg in zip(pieces, [*args, None]):
        if piece:
            parts.append(pl.lit(piece))
        if arg is not None:
            parts.append((pl.col(arg) if isinstance(arg, str) else arg).cast(pl.String))
    text = pl.concat_str(parts)
    if not args:
        return text
    first = args[0]
    name = first if isinstance(first, str) else first.meta.output_name(raise_if_undetermined=False)
    return text.alias(name) if name else text
