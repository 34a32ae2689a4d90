"""``python -m bench [--quick] [--only TOPIC] [--out DIR] [--report FILE]``."""

from bench._runner import main

if __name__ == "__main__":
    raise SystemExit(main())
