"""python -m content.demo [OUT.zip]: write the demo content pack (default: demo-pack.zip)."""

import sys
from pathlib import Path

from content.demo import demo_zip

out = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-pack.zip")
out.write_bytes(demo_zip())
print(f"wrote {out} ({out.stat().st_size // 1024} KiB)")
