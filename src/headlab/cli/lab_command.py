"""One ``headlab lab`` command built from its experiment's configuration dataclass and a list of :class:`Opt`.

Every lab command has the same shape: an option per exposed configuration field (default and type from the
dataclass, so the one home of a size stays ``headlab.lab.config``), then ``--seed``, ``--smoke``, ``--threads``,
``--json`` and ``--quiet``; ``--smoke`` swaps in the experiment's smoke sizes and keeps only the options marked
``smoke=True`` (a run's name, its model, its architecture switches).  :func:`lab_command` writes that function
once, with a real signature typer reads, instead of one hand-written copy per experiment.

No torch here: ``headlab lab --help`` answers without it.
"""

from __future__ import annotations

import dataclasses
import inspect
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from ..lab.config import SMOKE as SMOKE_SIZES
from ..lab.config import LabConfig
from . import _common as C

#: the options every lab command ends with (the python parameter names the callback receives)
COMMON = ("seed", "smoke", "threads", "json_out", "quiet")


@dataclass(frozen=True)
class Opt:
    """One exposed configuration ``field``: its ``help``, its spellings ``flags`` (default ``--field-name``; a bool
    field as ``--x/--no-x``), a hidden older spelling ``alias``, the least valid value ``min`` (None: no bound
    checked here; the experiment checks the rest) and whether ``--smoke`` keeps it (``smoke``)."""

    field: str
    help: str
    flags: tuple[str, ...] = ()
    alias: Optional[str] = None
    min: Optional[int] = None
    smoke: bool = False

    def decls(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.field.replace('_', '-')}",)

    def shown(self) -> str:
        """The first spelling without its ``--no-x`` half, for error messages (``--seq-len``)."""
        return self.decls()[0].split("/")[0]


def _cli_type(hint: Any) -> Any:
    """The typer annotation of a dataclass field's type: ``tuple[int, ...]`` becomes ``list[int]`` (a repeated flag)."""
    if typing.get_origin(hint) is tuple:
        return list[typing.get_args(hint)[0]]  # type: ignore[misc]
    return hint


def _value(opt: Opt, value: Any, old: Any = None) -> Any:
    """The value handed to the experiment: the alias's when given, a list as a tuple, ``min`` checked."""
    name = opt.shown()
    if old is not None:
        name, value = opt.alias or name, old
    if opt.min is not None and value < opt.min:
        raise typer.BadParameter(f"{name} must be >= {opt.min}, got {value}")
    return tuple(value) if isinstance(value, list) else value


def lab_command(
    app: typer.Typer,
    config: type[LabConfig],
    opts: tuple[Opt, ...],
    doc: str,
    finish: Callable[..., None],
    common: dict[str, Any],
) -> Callable[..., None]:
    """Register ``headlab lab <config.NAME>`` on ``app``: options ``opts`` of ``config``'s fields, then ``common``
    (``out`` first, then :data:`COMMON`), run by ``finish(module, kw, seed, out, threads, json_out)``."""
    name = config.NAME
    hints = typing.get_type_hints(config)
    fields = {f.name for f in dataclasses.fields(config)}
    bad = [o.field for o in opts if o.field not in fields]
    if bad:
        raise TypeError(f"lab {name}: options {bad} name no field of {config.__name__}; fields: {sorted(fields)}")
    params = [inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, default=common["out"], annotation=Path)]
    for o in opts:
        option = typer.Option(getattr(config, o.field), *o.decls(), help=o.help)
        params.append(
            inspect.Parameter(o.field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=_cli_type(hints[o.field]))
        )
        if o.alias:
            params.append(
                inspect.Parameter(
                    f"{o.field}__alias",
                    inspect.Parameter.KEYWORD_ONLY,
                    default=C.alias(o.alias),
                    annotation=Optional[hints[o.field]],
                )
            )
    kinds = {"seed": int, "smoke": bool, "threads": int, "json_out": bool, "quiet": bool}
    params += [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY, default=common[p], annotation=kinds[p]) for p in COMMON]

    def command(**given: Any) -> None:
        import importlib

        values = {o.field: _value(o, given[o.field], given.get(f"{o.field}__alias")) for o in opts}
        smoke = {**SMOKE_SIZES[name], **{o.field: values[o.field] for o in opts if o.smoke}}
        module = importlib.import_module(f"headlab.lab.{name.replace('-', '_')}")
        kw = smoke if given["smoke"] else values
        finish(module, kw, given["seed"], given["out"], given["threads"], given["json_out"])

    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__name__ = name.replace("-", "_")
    command.__doc__ = doc
    app.command(name)(command)
    return command
