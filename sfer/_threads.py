"""Placeholder: replaced by the thread-count rule (issue 8)."""

from __future__ import annotations


def _default_num_threads() -> int:
    from sfer import _core

    return int(_core.max_threads())


def get_num_threads() -> int:
    return _default_num_threads()
