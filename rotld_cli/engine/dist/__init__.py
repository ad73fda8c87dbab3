"""Distributed training: the process group of one rank (`group`), starting or joining a run
(`launch`, torchrun in a child process) and Slurm's task variables (`slurm`).

The worker entry that each launched process runs is the CLI's (`rotld_cli.cli.worker`): the
engine never imports the CLI.
"""
