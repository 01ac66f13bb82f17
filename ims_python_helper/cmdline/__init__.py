"""The command line's pieces: argument types, value parsers, signal handling, the pod-step commands."""
