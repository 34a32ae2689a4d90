"""Print the pins of a lock file (``pip freeze`` format) for the packages this interpreter
does not have yet: ``make driftpy-range`` installs one driftpy release first, with the
versions it pins itself, then the lock's pins for everything else."""

from __future__ import annotations

import sys
from importlib import metadata


def _name(requirement: str) -> str:
    return requirement.split("==", 1)[0].strip().lower().replace("_", "-")


def main(lock: str) -> None:
    installed = {_name(dist.metadata["Name"]) for dist in metadata.distributions()}
    with open(lock) as pins:
        for line in pins:
            if line.strip() and _name(line) not in installed:
                print(line.strip())


if __name__ == "__main__":
    main(sys.argv[1])
