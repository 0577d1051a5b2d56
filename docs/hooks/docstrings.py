"""MkDocs hooks for the API reference generated from the package's Sphinx-style docstrings.

- Roles: mkdocstrings parses the ``:param:`` fields but leaves a role inside the text as it is, which
  Markdown renders as ``:class:`` followed by the code. :func:`on_page_content` turns each role into
  its code alone (``Name`` for ``~pkg.mod.Name``, as Sphinx shows it), linked by mkdocs-autorefs when
  the object is rendered on a reference page, plain otherwise (an optional reference: never a warning).
- Known exceptions to griffe's checks: :data:`INHERITED_PARAMETERS` are ``BaseOperator`` arguments an
  operator documents although they reach it through ``**kwargs``; griffe would warn that they are not
  in the signature, which ``--strict`` makes an error. Every other docstring warning stays an error.
"""

from __future__ import annotations

import logging
import re
from typing import Any

_ROLE = re.compile(
    r":(?:py:)?(?:class|func|meth|mod|data|attr|exc|obj|const|ref):"
    r"<code>(?P<tilde>~?)(?P<target>[\w.]+)</code>"
)

#: (file, parameter): documented on purpose, passed on to ``BaseOperator`` through ``**kwargs``.
INHERITED_PARAMETERS = frozenset({("operators/migrate_keys.py", "do_xcom_push")})


def _render(match: re.Match[str]) -> str:
    target = match["target"]
    shown = target.rsplit(".", 1)[-1] if match["tilde"] else target
    if "." not in target:
        return f"<code>{shown}</code>"
    return f'<autoref identifier="{target}" optional><code>{shown}</code></autoref>'


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace the roles left in the rendered docstrings."""
    return _ROLE.sub(_render, html)


class _InheritedParameters(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(
            path in message
            and f"'{name}'" in message
            and ("does not appear in the function signature" in message or "No matching parameter" in message)
            for path, name in INHERITED_PARAMETERS
        )


_griffe_log = logging.getLogger("mkdocs.plugins.griffe")
if not any(isinstance(f, _InheritedParameters) for f in _griffe_log.filters):
    _griffe_log.addFilter(_InheritedParameters())
