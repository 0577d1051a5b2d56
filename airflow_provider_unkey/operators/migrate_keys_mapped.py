"""Mapped ``MigrateKeysOperator`` tasks: what ``partial()``/``expand`` do in place of ``__init__``.

``partial()`` never runs ``__init__``, so the argument checks and the ``pool_slots`` rule of an
unmapped task are done here, on the arguments given to ``partial`` and on the literal ones given to
``expand``/``expand_kwargs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk.definitions._internal.mixins import ResolveMixin
from airflow.sdk.definitions.mappedoperator import OperatorPartial

from airflow_provider_unkey.migration.engine import DEFAULT_MAX_CONCURRENCY
from airflow_provider_unkey.operators.migrate_keys_args import (
    _ARGUMENT_DEFAULTS,
    _check_arguments,
    _in_a_pool,
    _is_later,
)

if TYPE_CHECKING:
    from airflow.sdk.definitions._internal.expandinput import ExpandInput
    from airflow.sdk.definitions.mappedoperator import MappedOperator


def _mapped_partial(partial_op: OperatorPartial, kwargs: Mapping[str, Any]) -> OperatorPartial:
    """``BaseOperator.partial``'s result as a :class:`_MigrateKeysPartial`, its arguments checked.

    :param partial_op: what ``BaseOperator.partial(**kwargs)`` returned.
    :param kwargs: the arguments given to ``partial``.
    :raises ValueError: naming the first argument that is not valid.
    """
    mapped = _MigrateKeysPartial(
        operator_class=partial_op.operator_class, kwargs=partial_op.kwargs, params=partial_op.params
    )
    partial_op._expand_called = True  # replaced by `mapped`: no "never mapped" warning for it
    mapped.pool_slots_given = "pool_slots" in kwargs or "pool_slots" in (
        _default_args(kwargs, partial_op.kwargs.get("dag"))
    )
    try:
        mapped.check(None)
    except ValueError:
        mapped._expand_called = True  # it fails here: no "never mapped" warning on top
        raise
    return mapped


def _default_args(kwargs: Mapping[str, Any], dag: Any) -> dict[str, Any]:
    """The ``default_args`` that reach a ``partial()`` call: its own, then the DAG's."""
    merged = dict(getattr(dag, "default_args", None) or {})
    merged.update(kwargs.get("default_args") or {})
    return merged


class _MigrateKeysPartial(OperatorPartial):
    """``MigrateKeysOperator.partial(...)``: checks what ``expand`` adds and sets the pool slots."""

    pool_slots_given: bool = False

    def check(self, expand_input: ExpandInput | None) -> None:
        """Check the arguments as ``__init__`` would, for every mapped task whose arguments are known.

        :raises ValueError: naming the argument, and the ``expand_kwargs`` item it came from.
        """
        known = {k: v for k, v in self.kwargs.items() if k in _ARGUMENT_DEFAULTS}
        if expand_input is None:
            # partial() alone: what expand adds is not known yet, so only the given arguments count.
            mapped_later = {k: _ResolvedLater() for k in ("parquet_path", "sql") if k not in known}
            _check_arguments({**known, **mapped_later}, parsing=True, where="MigrateKeysOperator.partial(): ")
            return
        items = _literal_items(expand_input)
        if items is None:
            return  # an XComArg: its values are checked when each task runs
        concurrency = []
        for n, item in enumerate(items):
            _check_arguments({**known, **item}, parsing=True, where=f"expand item {n}: ")
            value = item.get("max_concurrency", known.get("max_concurrency", DEFAULT_MAX_CONCURRENCY))
            if isinstance(value, int):
                concurrency.append(value)
        if concurrency and "max_concurrency" not in known:
            self._pool_slots(max(concurrency))

    def _pool_slots(self, max_concurrency: int) -> None:
        if _in_a_pool(self.kwargs.get("pool")) and not self.pool_slots_given:
            self.kwargs["pool_slots"] = max_concurrency

    def _expand(self, expand_input: ExpandInput, *, strict: bool) -> MappedOperator:
        max_concurrency = self.kwargs.get("max_concurrency", DEFAULT_MAX_CONCURRENCY)
        if isinstance(max_concurrency, int):
            self._pool_slots(max_concurrency)
        self._expand_called = True
        self.check(expand_input)
        return super()._expand(expand_input, strict=strict)


class _ResolvedLater(ResolveMixin):
    """Stands in for an argument ``expand`` will give."""

    def iter_references(self) -> Iterable[Any]:
        return iter(())

    def resolve(self, context: Any) -> Any:  # pragma: no cover - never resolved
        raise NotImplementedError


def _literal_items(expand_input: ExpandInput) -> list[dict[str, Any]] | None:
    """Each mapped task's arguments, when ``expand``/``expand_kwargs`` were given literal values.

    :return: ``None`` when any of them comes from an ``XComArg`` (known only when the tasks run).
    """
    value: Any = expand_input.value
    if isinstance(value, Mapping):  # expand(name=[...], ...): the cross product
        lists: dict[str, Any] = dict(value)
        if any(_is_later(v) or not isinstance(v, Sequence) or isinstance(v, str) for v in lists.values()):
            return None
        items: list[dict[str, Any]] = [{}]
        for name, values in lists.items():
            items = [{**item, name: v} for item in items for v in values]
        return items
    if _is_later(value) or not isinstance(value, Sequence):
        return None
    if any(_is_later(item) for item in value):
        return None
    return [dict(item) for item in value]
