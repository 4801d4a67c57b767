"""Build ``edgebench-agent.pyz``: the agent package as one stdlib zipapp a device runs with its python3.

``python -m agent.build dist/edgebench-agent.pyz`` (``make agent``). The archive holds the ``agent``
package's modules (not this builder) and a ``__main__.py`` that calls ``agent.cli.main``; files are
added in sorted order so the same sources give the same archive contents.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import zipapp
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
_SKIP = {"build.py"}
_MAIN = "import sys\n\nfrom agent.cli import main\n\nsys.exit(main())\n"


def build(target: Path) -> Path:
    """Write the zipapp to ``target`` (parents created) and return its path. Raises OSError when the
    target cannot be written."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgebench-agent-build-") as tmp:
        stage = Path(tmp) / "app"
        (stage / "agent").mkdir(parents=True)
        for source in sorted(PACKAGE_DIR.glob("*.py")):
            if source.name not in _SKIP:
                shutil.copy2(source, stage / "agent" / source.name)
        (stage / "__main__.py").write_text(_MAIN)
        tmp_target = target.with_name(f".{target.name}.tmp")
        zipapp.create_archive(stage, tmp_target, interpreter="/usr/bin/env python3", compressed=True,
                              filter=lambda path: "__pycache__" not in path.parts)
        tmp_target.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.stderr.write("usage: python -m agent.build OUT.pyz\n")
        return 2
    path = build(Path(args[0]))
    sys.stdout.write(f"wrote {path} ({path.stat().st_size} bytes)\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
