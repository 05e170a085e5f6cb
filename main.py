"""TransferLab entry point: the desktop app by default, the headless CLI when given a command."""
import multiprocessing
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("gui", "--gui"):
        from gui.app import run_app
        return run_app(argv[1:])
    from engine.cli import main as cli_main
    return cli_main(argv)


if __name__ == "__main__":
    multiprocessing.freeze_support()
    sys.exit(main())
