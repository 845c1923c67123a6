"""Unit: the remote CLI imports nothing of the server but its own package.

.importlinter lists the server's packages one by one; this catches a
package added later that the list does not name yet.
"""

from __future__ import annotations

import ast
from pathlib import Path

REMOTE = Path(__file__).resolve().parents[2] / "app" / "remote"


def test_app_remote_imports_only_app_remote():
    for path in sorted(REMOTE.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                if name == "app" or name.startswith("app."):
                    assert name.startswith("app.remote"), f"{path.name} imports {name}"
