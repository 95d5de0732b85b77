"""``python -m dialler_async``: the ``dialler-async`` command line."""

from dialler_async.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
