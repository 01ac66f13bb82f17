"""Administrators' image tasks on the engines: verify an image in place, export it to a bundle, import a bundle."""
