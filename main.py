"""TransferLab entry point: the desktop app by default, the headless CLI when given a command."""
import logging
import multiprocessing
import sys

log = logging.getLogger("transferlab")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    from engine.core.runtime import tune_process
    tune_process()                  # before torch loads and before any other thread starts
    from engine.core.logs import setup_logging
    setup_logging(argv)
    if not argv or argv[0] in ("gui", "--gui"):
        from gui.app import run_app
        status = run_app(argv[1:])
    else:
        from engine.cli.main import main as cli_main
        status = cli_main(argv)
    log.info("exit status %s", status)
    return status


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
