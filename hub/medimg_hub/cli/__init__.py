"""The ``medimg`` command line (:func:`medimg_hub.cli.main.main`), one module per command group."""
