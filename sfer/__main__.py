"""``python -m sfer``: run the ``sfer`` command-line tool (see ``sfer --help``)."""

from sfer._cli import main

if __name__ == "__main__":
    raise SystemExit(main())
