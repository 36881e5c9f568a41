import matplotlib

matplotlib.use("Agg")  # the command line writes files only; no display on CI machines
