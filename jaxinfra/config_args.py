"""The argument after the colon of ``--config=configs/x.py:tiny,seed=1``.

Every ``configs/**/*.py`` parses its argument with :func:`parse`, so a misspelt option
(``:tyni``) is an error naming the accepted ones instead of silently running the full job.
"""
from __future__ import annotations

from typing import Callable, Mapping, NamedTuple, Sequence

__all__ = ["ConfigArgs", "parse"]


class ConfigArgs(NamedTuple):
    """A parsed config argument.

    Attributes:
      flags: the bare words given, e.g. ``{"tiny", "cond"}``.
      values: ``key=value`` options converted by their type, e.g. ``{"seed": 1}``.
      choices: for each group of mutually exclusive words, the one given (or the default).
    """
    flags: frozenset
    values: dict
    choices: dict


def parse(arg: str | None, *, flags: Sequence[str] = (),
          values: Mapping[str, Callable] | None = None,
          choices: Mapping[str, Sequence[str]] | None = None,
          defaults: Mapping[str, str] | None = None,
          aliases: Mapping[str, str] | None = None,
          exclusive: Sequence[Sequence[str]] = ()) -> ConfigArgs:
    """Parses ``"tiny,seed=1"`` (comma-separated, case and spaces ignored).

    Args:
      arg: the text after the colon (None or "" for none).
      flags: words accepted alone (``tiny``).
      values: ``key -> type`` of the accepted ``key=value`` options.
      choices: ``group -> words``: at most one word of each group (e.g. a model name).
      defaults: ``group -> word`` used when a group is not given (else None).
      aliases: ``alias -> word`` rewritten before matching (``fb237 -> fb15k-237``).
      exclusive: sets of flags that must not be given together.

    Returns:
      A :class:`ConfigArgs`.

    Raises:
      ValueError: an unknown word or key, a bad value, two words of one group, or
        exclusive flags together; the message lists what is accepted.
    """
    values, choices = dict(values or {}), dict(choices or {})
    aliases = dict(aliases or {})
    accepted = list(flags) + [w for ws in choices.values() for w in ws] + [
        f"{k}=..." for k in values]
    got_flags, got_values = set(), {}
    got_choices = {g: None for g in choices}
    for part in filter(None, (p.strip().lower() for p in (arg or "").split(","))):
        part = aliases.get(part, part)
        if "=" in part:
            key, text = (s.strip() for s in part.split("=", 1))
            if key not in values:
                raise ValueError(f"unknown config option {key!r}=; accepted: "
                                 f"{', '.join(accepted)}")
            try:
                got_values[key] = values[key](text)
            except ValueError:
                raise ValueError(f"config option {key}={text!r} is not a valid "
                                 f"{getattr(values[key], '__name__', 'value')}") from None
            continue
        group = next((g for g, ws in choices.items() if part in ws), None)
        if group is not None:
            if got_choices[group] not in (None, part):
                raise ValueError(f"config options {got_choices[group]!r} and {part!r} "
                                 f"exclude each other (pick one {group})")
            got_choices[group] = part
        elif part in flags:
            got_flags.add(part)
        else:
            raise ValueError(f"unknown config option {part!r}; accepted: "
                             f"{', '.join(accepted) or 'none'}")
    for group in exclusive:
        given = sorted(set(group) & got_flags)
        if len(given) > 1:
            raise ValueError(f"config options {' and '.join(map(repr, given))} exclude "
                             "each other")
    for group, word in (defaults or {}).items():
        if got_choices.get(group) is None:
            got_choices[group] = word
    return ConfigArgs(frozenset(got_flags), got_values, got_choices)
