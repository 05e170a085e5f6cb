"""The headless command line (`main.py COMMAND ...`): the top layer, free to use every other one."""
