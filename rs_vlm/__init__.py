"""rs-vlm for notebooks and scripts: ``import rs_vlm`` is the Python API of rs_vlm_app.api.

    import rs_vlm
    hits = rs_vlm.search(["a.tif", "b.tif"], "a marina with boats", top_k=10).results  # a GeoDataFrame

See docs/api.md.
"""

from rs_vlm_app.api import *  # noqa: F403 - this package is the API's public name
from rs_vlm_app.api import __all__  # noqa: F401

__version__ = __import__("rs_vlm_app").__version__
