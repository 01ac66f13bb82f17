"""``python -m ims_python_helper``."""

if __name__ == "__main__":
    # The collector waits until the modules are loaded (see cmdline.collector); so the imports come after.
    from .cmdline import collector

    collector.pause()
    from .cli import exit_process, main

    collector.resume()
    exit_process(main())
