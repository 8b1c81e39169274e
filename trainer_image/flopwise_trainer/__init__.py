"""The flopwise trainer: muP transformer training that reports what the fitter needs."""
