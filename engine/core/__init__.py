"""The bottom layer: control flags, events, atomic files, paths, process settings, logging. No torch."""
