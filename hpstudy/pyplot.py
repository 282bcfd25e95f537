"""matplotlib's pyplot, headless, imported when a figure is first drawn.

The import costs about 0.7 s here, and neither a study's driver nor its workers draw anything while
trials run (only `hpstudy train` and `hpstudy report` do), so the modules that draw import it here.
"""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # drivers, workers and CI have no display
    import matplotlib.pyplot as plt

    return plt
