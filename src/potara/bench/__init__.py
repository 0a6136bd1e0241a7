"""``potara bench``: suites of runs (methods × settings × seeds) and their report."""
