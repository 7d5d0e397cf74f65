"""Flags from a pydantic options model: each field becomes one Typer parameter, its description the help.

``@with_options(IndexOptions)`` on ``def index(options: IndexOptions, ...)`` gives the command a
flag per field (``--batch-size`` for ``batch_size``; ``SOURCE`` as the argument) and calls it with
the model built from them, so ``mmindex index``, ``mmindex schedule`` and the ingest flow share one
definition (``pipeline/ingest/options.py``). A value the model refuses is a one-line ``ConfigError``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Annotated, Any, TypeVar, get_origin

import annotated_types
import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo

from mmindex.pipeline.errors import ConfigError

Model = TypeVar("Model", bound=BaseModel)

# Fields whose flag is not ``--field-name``: extra spellings, or a positional argument.
_SPELLINGS: Mapping[str, tuple[str, ...]] = {"collection": ("--collection", "-c")}
_ARGUMENTS = frozenset({"source"})


def _bounds(field: FieldInfo) -> dict[str, Any]:
    bounds: dict[str, Any] = {}
    for rule in field.metadata:
        if isinstance(rule, annotated_types.Ge):
            bounds["min"] = rule.ge
        elif isinstance(rule, annotated_types.Le):
            bounds["max"] = rule.le
    return bounds


def _cli_type(field: FieldInfo) -> Any:
    """The type Typer parses: a list flag may be absent (``None``), the model then takes its default."""
    annotation: Any = field.annotation
    if get_origin(annotation) is list:
        return annotation | None
    return annotation


def _parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    help_text = field.description or ""
    info: Any
    if name in _ARGUMENTS:
        info = typer.Argument(metavar=name.upper(), help=help_text, show_default=False)
    else:
        flags = _SPELLINGS.get(name, ("--" + name.replace("_", "-"),))
        info = typer.Option(*flags, help=help_text, show_default=field.annotation is bool, **_bounds(field))
    if field.is_required():
        default: Any = inspect.Parameter.empty
    else:
        default = None if field.default_factory is not None else field.default
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[_cli_type(field), info])


def model_from_flags(model: type[Model], values: Mapping[str, Any]) -> Model:
    """The model from parsed flags (an absent list flag takes the field's default); a refused value as one line."""
    given = {name: value for name, value in values.items() if value is not None}
    try:
        return model(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or model.__name__
        raise ConfigError(f"invalid --{where.replace('_', '-')}: {first['msg']}") from None


def with_options(
    model: type[Model], *, exclude: frozenset[str] = frozenset()
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Give a command ``def cmd(options: Model, **own)`` one flag per field of ``model`` (but ``exclude``)."""
    fields = {name: field for name, field in model.model_fields.items() if name not in exclude}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]  # after ``options``
        model_params = [_parameter(name, field) for name, field in fields.items()]
        # positional argument first, then the required, then the rest (Python's order for a signature)
        ordered = sorted(model_params, key=lambda p: (p.name not in _ARGUMENTS, p.default is not inspect.Parameter.empty))
        own_required = [p for p in own if p.default is inspect.Parameter.empty]
        own_optional = [p for p in own if p.default is not inspect.Parameter.empty]
        required = [p for p in ordered if p.default is inspect.Parameter.empty]
        optional = [p for p in ordered if p.default is not inspect.Parameter.empty]
        parameters = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in
                      (*required, *own_required, *optional, *own_optional)]

        @functools.wraps(command)
        def run(**values: Any) -> None:
            options = model_from_flags(model, {name: values.pop(name) for name in fields})
            command(options, **values)

        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        del run.__wrapped__  # Typer reads the signature above, not the wrapped function's
        return run

    return decorate
