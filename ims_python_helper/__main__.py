"""``python -m ims_python_helper``."""

from .cli import exit_process, main

if __name__ == "__main__":
    exit_process(main())
