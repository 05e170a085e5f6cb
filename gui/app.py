"""Desktop app entry point (the window arrives with the desktop-app issue)."""
import sys


def run_app(argv: list[str]) -> int:
    print("The desktop app is not built yet; use the CLI: python main.py --help", file=sys.stderr)
    return 1
