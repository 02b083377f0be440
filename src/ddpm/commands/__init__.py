"""Subcommands of the ``ddpm`` tool, one module each; ``ddpm.cli`` lists them in ``COMMAND_MODULES``.

* :mod:`~ddpm.commands.sample`: ``ddpm sample``, images into a folder (front of ``ddpm.pipelines.batch``);
* :mod:`~ddpm.commands.info`: ``ddpm info``, what a checkpoint holds;
* :mod:`~ddpm.commands.train`: ``ddpm train`` (front of :class:`ddpm.training.Trainer`);
* :mod:`~ddpm.commands.evaluate`: ``ddpm evaluate`` (front of :mod:`ddpm.evaluation`);
* ``_common``: the MODEL argument and option types they share.
"""
