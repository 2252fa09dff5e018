"""A passing answer to each lab, shown on the lab's page (collapsed) with flashedu.listing:
the region between ``# [<lab>-solution-start]`` and ``# [<lab>-solution-end]``."""
