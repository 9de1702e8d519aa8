"""Read what ansible-core's ``jsonfile`` fact cache plugin wrote (``ANSIBLE_CACHE_PLUGIN=jsonfile``).

ansible-core 2.19 stores each host as ``s<schema>_<host>`` holding ``{"__payload__": "<JSON>"}``, the payload
written by its cache persistence profile (values carry their origin tags); ``ansible/_internal/_plugins/_cache.py``
(``PluginInterposer``) in ansible-core 2.19.14. The file is decoded with that profile's own decoder rather than
through the plugin loader, which would install Ansible's collection finder into this test process.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict


def cached_facts(cache_dir: Path, host: str) -> Dict[str, Any]:
    """The facts the cache holds for ``host``, as plain JSON data; AssertionError naming the files when none."""
    from ansible._internal._json._profiles import _cache_persistence

    files = sorted(cache_dir.glob("s*_" + host)) if cache_dir.is_dir() else []
    assert len(files) == 1, "no single fact cache file for %s in %s: %s" % (
        host, cache_dir, sorted(path.name for path in cache_dir.iterdir()) if cache_dir.is_dir() else "no directory")
    payload = json.loads(files[0].read_text())["__payload__"]
    return json.loads(json.dumps(json.loads(payload, cls=_cache_persistence.Decoder)))
